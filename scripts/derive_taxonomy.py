"""Generate labeling/data/interests.tsv and sensitive_map.yaml from the IAB 3.1 TSV (not shipped)."""

import csv
from pathlib import Path

SRC = Path("/work/shared/data/iab/Content_Taxonomy_3.1.tsv")
OUT = Path("/work/main/labeling/data")
rows = list(csv.reader(SRC.open(encoding="utf-8"), delimiter="\t"))[2:]
node = {}
for r in rows:
    r = (r + [""] * 8)[:8]
    uid, parent, name = r[0].strip(), r[1].strip(), r[2].strip()
    tiers = [t.strip() for t in r[3:7] if t.strip()]
    node[uid] = dict(
        id=uid,
        parent=parent or None,
        name=name,
        tier=len(tiers),
        path=" > ".join(tiers),
        scd=r[7].strip(),
    )
children = {}
for n in node.values():
    children.setdefault(n["parent"], []).append(n["id"])


def desc(i):
    out = []
    for c in children.get(i, []):
        out.append(c)
        out += desc(c)
    return out


SENSITIVE_T1 = {"286": "health", "453": "religion", "386": "political_views"}
EXCLUDED_T1 = {
    "v9i3On": "brand-safety branch (adult, arms, hate speech, drugs, ...): never an ad interest"
}
TIER2 = [
    "151",
    "179",
    "153",
    "155",
    "159",
    "160",
    "178",
    "30",
    "31",
    "32",
    "41",
    "34",
    "37",
    "25",
    "27",
    "46",
    "48",
    "49",
    "53",
    "80",
    "125",
    "127",
    "130",
    "131",
    "133",
    "137",
    "147",
    "148",
    "324",
    "338",
    "640",
    "180",
    "185",
    "188",
    "191",
    "192",
    "203",
    "204",
    "209",
    "211",
    "215",
    "216",
    "217",
    "218",
    "221",
    "222",
    "213",
    "214",
    "225",
    "229",
    "232",
    "240",
    "248",
    "259",
    "261",
    "264",
    "269",
    "243",
    "246",
    "247",
    "157",
    "275",
    "278",
    "279",
    "280",
    "281",
    "283",
    "276",
    "277",
    "164",
    "170",
    "172",
    "165",
    "392",
    "396",
    "397",
    "398",
    "410",
    "415",
    "416",
    "417",
    "423",
    "424",
    "425",
    "426",
    "428",
    "431",
    "439",
    "440",
    "442",
    "447",
    "451",
    "452",
    "444",
    "465",
    "467",
    "472",
    "390",
    "482",
    "474",
    "476",
    "477",
    "478",
    "479",
    "481",
    "161",
    "484",
    "518",
    "545",
    "547",
    "487",
    "492",
    "498",
    "508",
    "511",
    "512",
    "514",
    "515",
    "520",
    "521",
    "527",
    "531",
    "533",
    "551",
    "537",
    "539",
    "553",
    "576",
    "577",
    "579",
    "590",
    "560",
    "597",
    "598",
    "599",
    "632",
    "638",
    "639",
    "654",
    "655",
    "663",
    "664",
    "681",
    "682",
    "683",
    "684",
    "685",
]
# id -> (category, why)
EXTRA = {
    "454": ("philosophical_beliefs", "Agnosticism"),
    "457": ("philosophical_beliefs", "Atheism (dev gold also tags religion)"),
    "456": ("philosophical_beliefs", "Astrology: belief system, not a religion"),
    "Z7rJBM": (
        "political_views",
        "debated social issues (abortion, gun control, ...) reveal political opinion",
    ),
    "224": ("health", "Healthy Living > Children's Health"),
    "228": ("health", "Healthy Living > Men's Health"),
    "230": ("health", "Healthy Living > Senior Health"),
    "231": ("health", "Healthy Living > Weight Loss"),
    "238": ("health", "Healthy Living > Women's Health"),
    "233": ("health", "Alternative Medicine (treatment of conditions)"),
    "234": ("health", "Herbs and Supplements (IAB SCD)"),
    "235": ("health", "Holistic Health"),
    "236": ("health", "Physical Therapy"),
    "237": ("health", "Smoking Cessation"),
    "219": ("health", "Food Allergies"),
    "136": ("health", "Special Education implies disability"),
    "199": ("health", "Special Needs Kids implies disability"),
    "494": ("health", "Disabled Sports implies disability"),
    "169": ("health", "Birth (pregnancy / childbirth)"),
    "212": (
        "philosophical_beliefs",
        "Vegan Diets (IAB SCD; ethical veganism is a protected philosophical belief)",
    ),
    "354": ("religion", "Gospel Music"),
    "361": ("religion", "Religious (Music and Audio)"),
    "273": ("ethnicity", "Genealogy and Ancestry reveals ethnic/racial origin"),
}
EXCLUDED = dict(EXCLUDED_T1)
EXCLUDED.update(
    {
        "187": "Bereavement (IAB SCD): grief is not an ad interest",
        "135": "Secondary Education (IAB SCD): audience is minors",
        "181": "Casinos & Gambling: regulated / vulnerable-audience category",
        "524": "Poker and Professional Gambling: regulated / vulnerable-audience category",
        "480": "Lotteries and Scratchcards: regulated / vulnerable-audience category",
        "260": "Cigars: tobacco",
        "244": "Paranormal Phenomena: belief-adjacent",
        "393": "Financial Assistance: financial hardship",
        "405": "Personal Debt: financial hardship",
    }
)
sens = {}
for t1, cat in SENSITIVE_T1.items():
    sens[t1] = (cat, "sensitive tier-1")
    for d in desc(t1):
        sens[d] = (cat, "subtree of " + node[t1]["name"])
for k, v in EXTRA.items():
    assert k in node, k
    sens[k] = v
tier1 = [
    n
    for n in node.values()
    if n["tier"] == 1 and n["id"] not in SENSITIVE_T1 and n["id"] not in EXCLUDED
]
t2 = []
for i in TIER2:
    n = node[i]
    assert n["tier"] == 2, (i, n)
    assert i not in sens and i not in EXCLUDED and n["parent"] not in sens, i
    t2.append(n)
assert len(set(TIER2)) == len(TIER2)
OUT.mkdir(parents=True, exist_ok=True)
with (OUT / "interests.tsv").open("w", encoding="utf-8", newline="") as f:
    f.write("id\tname\ttier\tparent_id\tpath\n")
    for n in tier1:
        f.write(f"{n['id']}\t{n['name']}\t1\t\t{n['path']}\n")
        for c in [m for m in t2 if m["parent"] == n["id"]]:
            f.write(f"{c['id']}\t{c['name']}\t2\t{c['parent']}\t{c['path']}\n")


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def reason_of(i):
    r = EXCLUDED[i]
    return r.split(": ", 1)[1] if r.startswith(node[i]["name"] + ":") else r


order = [r[0].strip() for r in rows]
with (OUT / "sensitive_map.yaml").open("w", encoding="utf-8") as f:
    f.write(HEADER := open("/tmp/tax/header.yaml").read())
    f.write("sensitive:\n")
    for i in order:
        if i in sens:
            cat, why = sens[i]
            f.write(f"  - {{id: {q(i)}, category: {cat}, name: {q(node[i]['name'])}}}  # {why}\n")
    f.write("\nexcluded:\n")
    for i in order:
        if i in EXCLUDED:
            f.write(f"  - {{id: {q(i)}, name: {q(node[i]['name'])}, reason: {q(reason_of(i))}}}\n")
print("tier1", len(tier1), "tier2", len(t2), "sensitive", len(sens), "excluded", len(EXCLUDED))
import collections

print(collections.Counter(c for c, _ in sens.values()))
