"""Deterministic synthetic conversations, with gold labels, for tests and demos.

:func:`generate` writes records in the labelloop JSONL shape across the four AI surfaces:

* ``assistant_chat``: user / assistant text turns, sometimes a follow-up pair;
* ``smart_glasses``: a user voice transcript ("Hey Meta, ...", modality ``voice``), the AI's caption
  of the photo or video the glasses took (role ``assistant``, modality ``image`` or ``video``) and
  sometimes the AI's spoken answer (``voice``);
* ``vibes``: a prompt for an AI video feed clip and the AI's short description of the clip;
* ``imagine``: an AI image-generation prompt and the AI's short description of the images.

Mix (approximate, by design): ~15 % of records come from excluded countries (EU/EEA, GB, KR), ~10 %
from unlinked accounts, ~10 % start before the policy date 2025-12-16 (a few exactly on either side
of midnight), ~25 % touch a sensitive category, and ~8 % carry PII (emails, phones, a street
address, a card number) so that redaction is exercised. The same ``seed`` always gives the same
records: one ``random.Random(seed)``, no global state, a fixed base time, no clock.

Gold-label rules (how ``gold`` is decided for every template here; annotators follow the same):

1. **Topic presence.** A sensitive category is labelled whenever the conversation *discusses* the
   topic, in any turn, role or modality (a glasses photo caption counts). Stance does not matter:
   a negation ("I'm not religious at all, just want a quiet hotel") is labelled ``religion``;
   a mention of someone else ("my brother just came out, what gift should I get him") is
   labelled ``sexual_orientation``; sarcasm ("sure, praying harder will fix my transmission") is
   labelled by the topic it mocks. We would rather drop a conversation than guess at intent.
2. **Which category.** ``health``: conditions, symptoms, injuries, surgery, medication, mental
   health, disability (not fitness, diet or sport on their own: those are the ``Healthy Living``
   / ``Sports`` interests). ``religion``: faiths, practices, religious holidays and dietary laws
   (halal, kosher), and stances on religion including atheism / agnosticism.
   ``philosophical_beliefs``: non-religious worldviews held as convictions (stoicism, ethical
   veganism, pacifism, anti-natalism, effective altruism). ``political_views``: parties,
   candidates, ideologies, activism. ``ethnicity``: race, ethnic origin, heritage.
   ``sexual_orientation``: orientation of the user or anyone named. ``union_membership``: trade
   unions, union reps, strikes, dues. False friends are *not* sensitive: "Rugby Union", "credit
   union", "the European Union".
3. **Interests** are the IAB Content Taxonomy 3.1 tier-1 names (exact spelling) of the commercial
   topics the conversation is about, from :data:`INTEREST_NAMES` only; the sensitive-themed tier-1s
   (Medical Health, Religion & Spirituality, Politics, Sensitive Topics, ...) are never used as
   interests. A sensitive conversation still gets its interests ("best hiking boots after my
   knee surgery" -> sensitive ``health``, interests ``Sports`` and ``Shopping``): dropping it is
   the policy's job, not the annotator's. ``[]`` means no commercial topic (small talk, a
   purely medical question).
4. **Gold ignores eligibility.** Country, account linkage and date never change ``gold``: records
   that the policy excludes still carry their true labels, so tests can check that the exclusion,
   not the labeller, removed them.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

__all__ = [
    "BAD_LINE_PROBLEMS",
    "BASE_TIME",
    "EXCLUDED_COUNTRIES",
    "HARD_CASE_KINDS",
    "INCLUDED_COUNTRIES",
    "INTEREST_NAMES",
    "MODALITIES",
    "POLICY_DATE",
    "SENSITIVE_CATEGORIES",
    "SURFACES",
    "SynthRecord",
    "bad_lines",
    "generate",
    "generate_annotated",
    "write_jsonl",
]

POLICY_DATE: Final = datetime(2025, 12, 16, tzinfo=UTC)
BASE_TIME: Final = POLICY_DATE
SURFACES: Final = ("assistant_chat", "smart_glasses", "vibes", "imagine")
MODALITIES: Final = ("text", "voice", "image", "video")
SENSITIVE_CATEGORIES: Final = (
    "religion",
    "sexual_orientation",
    "political_views",
    "health",
    "ethnicity",
    "philosophical_beliefs",
    "union_membership",
)

# fmt: off
# EU member states + the other EEA states (IS, LI, NO) + GB + KR: the policy's exclusions.
EXCLUDED_COUNTRIES: Final = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO", "GB", "KR",
    }
)
# Eligible countries the generator uses, with weights (roughly a large US share).
INCLUDED_COUNTRIES: Final[Mapping[str, int]] = {
    "US": 40, "CA": 8, "BR": 8, "IN": 8, "MX": 6, "JP": 5, "AU": 5, "PH": 3, "ZA": 3, "AR": 3,
    "CO": 3, "NG": 2, "SG": 2, "NZ": 2, "ID": 2, "TR": 1, "EG": 1, "CL": 1, "AE": 1,
}
_EXCLUDED_WEIGHTS: Final[Mapping[str, int]] = {
    "DE": 6, "FR": 6, "GB": 8, "IT": 4, "ES": 4, "NL": 3, "PL": 3, "SE": 2, "IE": 2, "KR": 4,
    "NO": 1, "IS": 1, "LI": 1, "AT": 1, "BE": 1, "PT": 1, "DK": 1, "FI": 1, "GR": 1, "RO": 1,
}

# fmt: on

HARD_CASE_KINDS: Final = (
    "sensitive_in_interest",  # a sensitive topic inside an interest conversation
    "negation",  # "I'm not religious at all, ..."
    "third_party",  # "my brother just came out, ..."
    "sarcasm",  # "sure, praying harder will fix my car"
    "multi_sensitive",  # two categories at once
    "caption_only",  # glasses: the sensitive signal is only in the photo/video caption
    "false_friend",  # "Rugby Union", "credit union": NOT sensitive
)
_PLAIN_KINDS: Final = ("interest", "multi_interest", "no_interest", "sensitive")

# --------------------------------------------------------------------------------------------
# Slot vocabularies (shared by every template; a template names the slots it uses)
# --------------------------------------------------------------------------------------------

# fmt: off
SLOTS: Final[Mapping[str, tuple[str, ...]]] = {
    "city": ("Lisbon", "Kyoto", "Cancún", "Banff", "Cape Town", "Bali", "Buenos Aires",
             "Marrakech", "Queenstown", "Vancouver", "Mexico City", "Sydney", "Goa"),
    "trip": ("weekend getaway", "two-week trip", "honeymoon", "backpacking trip",
             "family vacation", "solo trip"),
    "dish": ("ramen", "sourdough bread", "paella", "tacos al pastor", "butter chicken",
             "pad thai", "tiramisu", "shakshuka", "pho"),
    "drink": ("cold brew", "natural wine", "a matcha latte", "a hazy IPA", "an espresso tonic"),
    "sport": ("tennis", "soccer", "basketball", "surfing", "bouldering", "road cycling",
              "trail running", "pickleball"),
    "team": ("the Lakers", "Flamengo", "the Yankees", "Club América", "the Toronto Raptors",
             "the Kansas City Chiefs"),
    "car": ("Toyota RAV4", "Tesla Model 3", "Honda Civic", "Ford F-150", "Kia EV6",
            "Jeep Wrangler", "Subaru Outback"),
    "part": ("winter tires", "brake pads", "a roof rack", "a dash cam", "a new battery"),
    "device": ("laptop for coding", "mechanical keyboard", "4K monitor", "mesh wifi router",
               "pair of noise-cancelling headphones", "smartwatch", "mirrorless camera"),
    "software": ("Python", "a home media server", "cloud photo backups", "a VPN", "Linux"),
    "game": ("Elden Ring", "Minecraft", "Stardew Valley", "Fortnite", "Hades II",
             "Baldur's Gate 3", "Mario Kart"),
    "platform": ("Switch 2", "PS5", "Steam Deck", "Xbox Series X", "gaming PC"),
    "item": ("a pair of white sneakers", "a linen shirt", "a trench coat", "a denim jacket",
             "a pair of ankle boots", "a silk scarf", "a leather belt"),
    "occasion": ("a summer wedding", "a job interview", "a beach party", "a gallery opening",
                 "a first date"),
    "project": ("repaint the kitchen cabinets", "build raised garden beds",
                "fix a leaky faucet", "tile a small bathroom", "hang floating shelves"),
    "plant": ("monstera", "basil", "lavender", "tomatoes", "succulents", "a fiddle-leaf fig"),
    "pet": ("golden retriever puppy", "rescue cat", "bearded dragon", "parrot", "beagle",
            "pair of guinea pigs"),
    "pet_need": ("a calmer crate", "grain-free food", "a scratching post", "a GPS collar",
                 "an automatic feeder"),
    "book": ("Dune", "Pride and Prejudice", "The Three-Body Problem", "Project Hail Mary",
             "The Hobbit", "Circe"),
    "genre": ("sci-fi", "cozy mystery", "epic fantasy", "historical fiction", "thriller"),
    "show": ("Severance", "The Bear", "Squid Game", "Stranger Things", "Shōgun"),
    "artist": ("Taylor Swift", "Bad Bunny", "BTS", "Beyoncé", "Coldplay", "Arijit Singh"),
    "money": ("a high-yield savings account", "investing in index funds", "a Roth IRA",
              "a budget spreadsheet", "paying off credit card debt", "an emergency fund"),
    "role": ("data analyst", "product manager", "electrician", "UX designer",
             "software engineer", "warehouse supervisor", "chef"),
    "course": ("an online MBA", "a coding bootcamp", "a Spanish course", "AP calculus",
               "a data science certificate"),
    "home": ("a two-bedroom condo", "a starter home", "a studio apartment", "a townhouse"),
    "deal": ("a gift under $50", "a new vacuum cleaner", "Black Friday TV deals",
             "a carry-on suitcase", "a coffee grinder"),
    "workout": ("a 5k training plan", "HIIT workouts", "yoga for beginners",
                "a high-protein meal prep", "a 10,000-steps habit"),
    "art": ("watercolor landscapes", "an oil portrait", "street murals", "charcoal sketches",
            "a ceramics class"),
    "hobby": ("birdwatching", "knitting", "film photography", "chess", "woodworking",
              "drone flying", "pottery"),
    "event": ("a music festival", "a tech conference", "a comedy show", "a food festival",
              "a marathon expo"),
    "celebration": ("my daughter's 10th birthday party", "our wedding anniversary",
                    "a baby shower", "a graduation party", "my retirement party"),
    "family": ("a toddler sleep schedule", "a family game night", "screen-time rules for a "
               "teenager", "planning a first date", "a chore chart for kids"),
    "holiday": ("Halloween costumes", "a Thanksgiving menu", "New Year's Eve plans",
                "Valentine's Day dinner", "Fourth of July fireworks"),
    "science": ("black holes", "the James Webb telescope", "how volcanoes form",
                "quantum computing", "why the sky is blue"),
    "attraction": ("a theme park", "the aquarium", "a national park", "the zoo",
                   "a botanical garden"),
    "business": ("an Etsy shop", "a food truck", "a small bakery", "a freelance design studio"),
    "condition": ("type 2 diabetes", "migraines", "depression", "asthma",
                  "high blood pressure", "long COVID"),
    "med": ("metformin", "sertraline", "lisinopril", "ibuprofen", "an inhaler"),
    "surgery": ("knee surgery", "ACL reconstruction", "a broken ankle", "hip replacement"),
    "faith_event": ("Ramadan", "Yom Kippur", "Diwali", "Lent", "Vesak"),
    "style": ("cinematic, golden hour", "lo-fi anime style", "watercolor", "photorealistic",
              "retro VHS look", "claymation"),
    "first": ("maria", "john", "priya", "kenji", "lucas", "amara", "chloe", "diego"),
    "last": ("silva", "smith", "patel", "tanaka", "okafor", "nguyen", "garcia", "miller"),
}

# --------------------------------------------------------------------------------------------
# Interest bank: IAB 3.1 tier-1 name -> user asks, visual scenes, assistant replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Interest:
    asks: tuple[str, ...]
    scenes: tuple[str, ...]
    replies: tuple[str, ...]


_BANK: Final[Mapping[str, _Interest]] = {
    "Travel": _Interest(
        asks=("what's the best time of year to visit {city} for a {trip}?",
              "find me a cheap flight and a quiet hotel in {city} for a {trip}",
              "what should I pack for a {trip} to {city}?"),
        scenes=("a sunset over the old town of {city}", "a boarding pass and a suitcase at "
                "the gate for a flight to {city}", "a train window view on the way to {city}"),
        replies=("For a {trip} to {city}, shoulder season usually means fewer crowds and lower "
                 "hotel rates.", "Here are three neighbourhoods in {city} that work well for a "
                 "{trip}."),
    ),
    "Food & Drink": _Interest(
        asks=("give me an easy recipe for {dish} for four people",
              "what goes well with {dish}, maybe {drink}?",
              "where can I get really good {dish} tonight?"),
        scenes=("a steaming bowl of {dish} on a wooden table", "a barista pouring {drink} "
                "in a sunny cafe", "a farmers market stall piled with ingredients for {dish}"),
        replies=("Here's a simple {dish} recipe that takes about 40 minutes.", "Good pairing "
                 "ideas for {dish}: start with {drink} and keep the sides light."),
    ),
    "Sports": _Interest(
        asks=("how should I train for my first {sport} season?",
              "when do {team} play next and where can I watch it?",
              "what gear do I need to start {sport}?"),
        scenes=("a packed stadium cheering for {team}", "{sport} gear laid out on a bench",
                "a slow-motion shot of {sport} at dusk"),
        replies=("For {sport}, build up gradually: three sessions a week is plenty at first.",
                 "{team} play on Saturday; most streaming sports packages carry the game."),
    ),
    "Automotive": _Interest(
        asks=("is the {car} worth it compared to other SUVs?",
              "how much does it cost to put {part} on a {car}?",
              "should I lease or buy a {car}?"),
        scenes=("a red {car} on a winding mountain road", "a mechanic fitting {part} in a "
                "garage", "a {car} dashboard at night"),
        replies=("The {car} holds its value well; compare the total cost over five years.",
                 "Fitting {part} usually takes an hour at a shop; parts vary by trim."),
    ),
    "Technology & Computing": _Interest(
        asks=("which {device} under $1,000 would you recommend?",
              "how do I set up {software} on my new {device}?",
              "is it worth upgrading my {device} this year?"),
        scenes=("a tidy desk setup with a {device} and soft RGB lighting",
                "a macro shot of a circuit board", "a {device} unboxing on a white table"),
        replies=("Three {device} picks at different budgets, with pros and cons.",
                 "Setting up {software} takes about ten minutes; here are the steps."),
    ),
    "Video Gaming": _Interest(
        asks=("any tips for beating the final boss in {game}?",
              "is {game} better on {platform} or PC?", "what games are like {game}?"),
        scenes=("a cozy gaming corner with a {platform} and neon lights",
                "a pixel-art castle inspired by {game}", "friends playing {game} on a couch"),
        replies=("For the last fight in {game}, level up first and keep a ranged option.",
                 "{game} runs well on {platform}; load times are the main difference."),
    ),
    "Style & Fashion": _Interest(
        asks=("what should I wear to {occasion}?", "does {item} go with a navy suit?",
              "where can I find {item} that will last?"),
        scenes=("a street-style shot of someone wearing {item}", "an outfit flat lay for "
                "{occasion}", "a fashion runway with {item} under bright lights"),
        replies=("For {occasion}, keep it simple: one statement piece like {item}.",
                 "Yes, {item} pairs well with navy; keep the rest neutral."),
    ),
    "Home & Garden": _Interest(
        asks=("how do I {project} on a weekend?", "why are the leaves on my {plant} turning "
              "yellow?", "what tools do I need to {project}?"),
        scenes=("a sunny balcony full of {plant}", "a before-and-after of a kitchen where "
                "we {project}", "a backyard with freshly built raised beds"),
        replies=("To {project}, plan two days and prep the surface well.",
                 "Yellow leaves on {plant} usually mean too much water."),
    ),
    "Pets": _Interest(
        asks=("what's the best way to house-train a {pet}?",
              "does my {pet} need {pet_need}?", "how often should I take my {pet} to the vet?"),
        scenes=("a {pet} napping in a sunbeam", "a {pet} playing with a new toy",
                "a {pet} wearing a tiny raincoat"),
        replies=("A {pet} learns fastest with short, consistent sessions.",
                 "{pet_need} can help; introduce it gradually."),
    ),
    "Books and Literature": _Interest(
        asks=("what should I read after {book}?", "recommend a {genre} novel for a long flight",
              "is {book} worth reading before the adaptation?"),
        scenes=("a stack of {genre} paperbacks on a window seat", "an open copy of {book} "
                "next to a cup of tea", "a cozy bookstore aisle"),
        replies=("If you liked {book}, try a {genre} title with a similar pace.",
                 "{book} is worth it; the first half is slower but pays off."),
    ),
    "Entertainment": _Interest(
        asks=("is {show} worth binge-watching this weekend?",
              "when is {artist} touring near me?", "what shows are like {show}?"),
        scenes=("a concert crowd with phone lights up for {artist}", "a movie night setup "
                "with popcorn and {show} on the TV", "a neon-lit stage before the show"),
        replies=("{show} is a great binge: about eight hours for the first season.",
                 "{artist} announced new dates; presale usually starts on Tuesday."),
    ),
    "Personal Finance": _Interest(
        asks=("is {money} a good idea at my age?", "how do I start {money} with $200 a month?",
              "explain {money} like I'm five"),
        scenes=("a notebook with a budget chart and a calculator", "a piggy bank on a desk "
                "next to a laptop", "coins stacked into a growing bar chart"),
        replies=("{money} works best when it's automatic; start small and stay consistent.",
                 "Here's a simple plan for {money}, step by step."),
    ),
    "Careers": _Interest(
        asks=("how do I become a {role} without a degree?",
              "what salary should a {role} ask for?", "review my resume for a {role} job"),
        scenes=("a modern open-plan office at golden hour", "someone shaking hands after a "
                "job interview", "a {role} presenting to a team"),
        replies=("Most {role} roles value a portfolio over a degree; here's how to build one.",
                 "For a {role}, research the local range and anchor at the top of it."),
    ),
    "Education": _Interest(
        asks=("is {course} worth the money?", "how many hours a week does {course} take?",
              "help me make a study plan for {course}"),
        scenes=("a campus library with tall windows", "a laptop showing {course} on a "
                "kitchen table", "a graduation cap thrown in the air"),
        replies=("{course} pays off if you finish it; budget about eight hours a week.",
                 "Here's a four-week study plan for {course}."),
    ),
    "Real Estate": _Interest(
        asks=("should I rent or buy {home} in {city}?", "what does closing cost on {home}?",
              "how do I win a bidding war for {home}?"),
        scenes=("a bright open-house living room", "a 'sold' sign in front of {home}",
                "a drone view of a new neighbourhood"),
        replies=("For {home} in {city}, compare the price-to-rent ratio first.",
                 "Closing costs on {home} are typically 2-5 % of the price."),
    ),
    "Shopping": _Interest(
        asks=("find me {deal}", "is now a good time to buy {deal} or should I wait?",
              "compare three options for {deal}"),
        scenes=("a shopping cart full of {deal}", "a gift box with a bow on a counter",
                "a busy mall on a Saturday"),
        replies=("Here are three options for {deal} with current prices.",
                 "Prices on {deal} usually drop in late November."),
    ),
    "Healthy Living": _Interest(
        asks=("build me {workout} for the next month", "is {workout} enough to stay fit?",
              "how do I stay motivated with {workout}?"),
        scenes=("a sunrise run along a beach", "a yoga mat in a bright living room",
                "meal-prep containers with rice and vegetables"),
        replies=("Here's {workout}, four days a week with a rest day in between.",
                 "Consistency beats intensity: schedule {workout} like a meeting."),
    ),
    "Fine Art": _Interest(
        asks=("how do I get started with {art}?", "which museums near me show {art}?",
              "what supplies do I need for {art}?"),
        scenes=("{art} in a bright gallery", "an easel by a window with {art} in progress",
                "a museum hall full of classical sculptures"),
        replies=("Start {art} with a small kit and daily ten-minute studies.",
                 "Two galleries nearby have {art} on show this month."),
    ),
    "Hobbies & Interests": _Interest(
        asks=("I want to get into {hobby}, where do I start?",
              "what's a good beginner kit for {hobby}?", "any local clubs for {hobby}?"),
        scenes=("someone enjoying {hobby} in a quiet park", "a workbench set up for "
                "{hobby}", "a close-up of hands busy with {hobby}"),
        replies=("For {hobby}, a basic kit and a local club are the fastest way in.",
                 "Here's a beginner checklist for {hobby}."),
    ),
    "Events": _Interest(
        asks=("are there tickets left for {event} this weekend?",
              "what should I bring to {event}?", "find {event} near {city} next month"),
        scenes=("a crowd at {event} under string lights", "wristbands and tickets for "
                "{event}", "a stage being set up for {event}"),
        replies=("A few tickets for {event} are still on resale sites.",
                 "Bring water, a charger and comfy shoes to {event}."),
    ),
    "Personal Celebrations & Life Events": _Interest(
        asks=("help me plan {celebration}", "theme ideas for {celebration}?",
              "how much should I budget for {celebration}?"),
        scenes=("balloons and a cake for {celebration}", "a table set for {celebration} "
                "with candles", "confetti falling at {celebration}"),
        replies=("For {celebration}, pick a theme first; everything else follows.",
                 "A realistic budget for {celebration} is about $30 per guest."),
    ),
    "Family and Relationships": _Interest(
        asks=("tips for {family}?", "how do other parents handle {family}?",
              "give me ideas for {family}"),
        scenes=("a family laughing around a board game", "a kid's room with a chore chart "
                "on the wall", "a picnic blanket in a park with the family"),
        replies=("For {family}, consistency and a simple routine help the most.",
                 "Here are five ideas for {family}."),
    ),
    "Holidays": _Interest(
        asks=("ideas for {holiday} this year?", "how early should I start planning {holiday}?",
              "any budget-friendly ideas for {holiday}?"),
        scenes=("a porch decorated for {holiday}", "a long table set for {holiday}",
                "fireworks over a city skyline"),
        replies=("Here are some budget-friendly ideas for {holiday}.",
                 "Start planning {holiday} about three weeks ahead."),
    ),
    "Science": _Interest(
        asks=("explain {science} simply", "what's the latest discovery about {science}?",
              "good documentaries about {science}?"),
        scenes=("a swirling galaxy seen through a telescope", "a lab bench with glowing "
                "test tubes", "an erupting volcano at night"),
        replies=("In short, {science} comes down to a few simple ideas.",
                 "Here are two recent findings about {science}."),
    ),
    "Attractions": _Interest(
        asks=("is {attraction} in {city} worth a visit?", "best time to go to {attraction} "
              "to avoid lines?", "how long do you need at {attraction}?"),
        scenes=("a roller coaster at {attraction} at sunset", "kids pressed against the "
                "glass at {attraction}", "a winding path through {attraction}"),
        replies=("Go to {attraction} right at opening to skip most of the lines.",
                 "Plan about half a day for {attraction}."),
    ),
    "Business and Finance": _Interest(
        asks=("how do I register {business} as an LLC?", "write a business plan outline "
              "for {business}", "how should I price products for {business}?"),
        scenes=("a shopfront for {business} on opening day", "a small team around a "
                "whiteboard with sales charts", "a laptop with an invoice template open"),
        replies=("Registering {business} as an LLC takes a form and a filing fee.",
                 "Here's a one-page plan outline for {business}."),
    ),
}

INTEREST_NAMES: Final = frozenset(_BANK)

# --------------------------------------------------------------------------------------------
# Sensitive and hard cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Case:
    kind: str  # "sensitive" or one of HARD_CASE_KINDS
    sensitive: tuple[str, ...]
    interests: tuple[str, ...]
    utterances: tuple[str, ...]  # chat text / glasses voice
    prompts: tuple[str, ...] = ()  # vibes / imagine prompts (default: the utterances)
    caption: str = ""  # glasses caption; caption_only cases put the sensitive signal here


_CASES: Final[tuple[_Case, ...]] = (
    # ---------------------------------------------------------------- health
    _Case("sensitive", ("health",), (),
          ("what are the early symptoms of {condition}?",
           "my doctor changed my {med} dose and I feel dizzy, is that normal?")),
    _Case("sensitive_in_interest", ("health",), ("Sports", "Shopping"),
          ("best hiking boots after my {surgery}?",
           "which running shoes are gentle on my knees after {surgery}?"),
          ("imagine me crossing a marathon finish line one year after {surgery}, {style}",)),
    _Case("sensitive_in_interest", ("health",), ("Food & Drink",),
          ("low-sugar {dish} recipe? I was just diagnosed with {condition}",
           "can I still drink {drink} while taking {med}?")),
    _Case("third_party", ("health",), ("Travel",),
          ("plan a wheelchair-accessible {trip} to {city} for my mom after her stroke",
           "my dad has dementia, which hotels in {city} are quiet enough for him?")),
    _Case("sarcasm", ("health",), ("Travel",),
          ("oh great, another migraine, exactly what I needed before my flight to {city}",
           "love how my asthma picks the day of my {trip} to flare up. anyway, hotels in "
           "{city}?")),
    _Case("negation", ("health",), ("Entertainment",),
          ("I don't have anxiety or anything, I just want a calm playlist like {artist}",
           "not depressed, just bored: what shows are like {show}?")),
    _Case("caption_only", ("health",), (),
          ("hey meta, what's this?", "hey meta, remind me about this tomorrow"),
          caption="a prescription bottle of {med} and a pill organizer on a bathroom shelf"),
    # ---------------------------------------------------------------- religion
    _Case("sensitive", ("religion",), (),
          ("when does {faith_event} start this year and how do I prepare spiritually?",
           "help me write a short prayer for my grandmother's funeral mass")),
    _Case("negation", ("religion",), ("Travel",),
          ("I'm not religious at all, just want a quiet hotel in {city} away from church bells",
           "we're atheists, so skip the cathedrals: what else is there to do in {city}?")),
    _Case("sensitive_in_interest", ("religion",), ("Food & Drink",),
          ("halal restaurants near the mosque in {city}?",
           "kosher {dish} recipe for our Shabbat dinner"),
          ("a festive {faith_event} dinner table with {dish}, {style}",)),
    _Case("third_party", ("religion",), ("Shopping",),
          ("my girlfriend is Catholic, what gift should I get her for her confirmation?",
           "my coworker is fasting for {faith_event}, is {deal} an appropriate gift?")),
    _Case("sarcasm", ("religion",), ("Automotive",),
          ("sure, because praying harder will fix my {car}'s transmission. how much is a "
           "rebuild?",)),
    _Case("caption_only", ("religion",), (),
          ("hey meta, take a picture", "hey meta, what am I looking at?"),
          caption="a rosary hanging from the rear-view mirror next to a small saint medal"),
    # ---------------------------------------------------------------- sexual orientation
    _Case("third_party", ("sexual_orientation",), ("Shopping",),
          ("my brother just came out, what gift should I get him?",
           "my best friend just told me she's bisexual, what's a thoughtful {deal}?")),
    _Case("sensitive", ("sexual_orientation",), ("Family and Relationships",),
          ("as a lesbian couple, what should we know before adopting?",
           "how do I come out to my parents as gay?")),
    _Case("sensitive_in_interest", ("sexual_orientation",), ("Travel",),
          ("gay-friendly beach resorts near {city}?",
           "is {city} safe for a queer couple on a {trip}?"),
          ("make a video of two grooms dancing at their wedding under string lights, {style}",)),
    _Case("negation", ("sexual_orientation",), ("Style & Fashion",),
          ("I'm straight, but my friends are taking me to a drag brunch: does {item} work?",)),
    _Case("sarcasm", ("sexual_orientation",), ("Style & Fashion",),
          ("yeah because wearing pink obviously makes me gay lol. anyway, would {item} be too "
           "loud?",)),
    # ---------------------------------------------------------------- political views
    _Case("sensitive", ("political_views",), (),
          ("which candidate should a progressive vote for in the primary?",
           "is the Green Party platform realistic on carbon taxes?"),
          ("a crowd at a campaign rally waving party flags, {style}",)),
    _Case("sensitive_in_interest", ("political_views",), ("Entertainment",),
          ("I'm a lifelong conservative, recommend podcasts for my drive to {city}",
           "as a libertarian, which documentaries like {show} would I enjoy?")),
    _Case("negation", ("political_views",), ("Technology & Computing",),
          ("I don't care about politics or elections, just tell me which {device} is cheapest",)),
    _Case("sarcasm", ("political_views",), ("Personal Finance",),
          ("love how this government spends my taxes so wisely. anyway, is {money} worth it?",)),
    _Case("third_party", ("political_views",), ("Books and Literature",),
          ("my uncle is a die-hard socialist, what book should I get him after {book}?",)),
    # ---------------------------------------------------------------- ethnicity
    _Case("sensitive", ("ethnicity",), ("Style & Fashion",),
          ("as a Black woman, which sunscreen won't leave a white cast?",
           "hair products for Afro-Latina curls that aren't crazy expensive?")),
    _Case("third_party", ("ethnicity",), ("Food & Drink",),
          ("my wife is Korean-American, help me cook a traditional dish for her family",
           "my boyfriend's family is Nigerian, what should I bring to dinner besides {dish}?")),
    _Case("negation", ("ethnicity",), ("Events",),
          ("I'm not Indigenous, is it respectful for me to attend a powwow near {city}?",)),
    _Case("sensitive_in_interest", ("ethnicity",), ("Fine Art",),
          ("ideas for a portrait of my Yoruba grandmother in traditional attire",),
          ("imagine a portrait of my Nigerian grandmother in traditional Yoruba attire, "
           "{style}",)),
    # ---------------------------------------------------------------- philosophical beliefs
    _Case("sensitive", ("philosophical_beliefs",), ("Careers",),
          ("as a stoic, how should I handle getting passed over for the {role} job?",
           "I live by effective altruism: should I take the higher-paying {role} offer and "
           "donate more?")),
    _Case("sensitive_in_interest", ("philosophical_beliefs",), ("Style & Fashion",),
          ("I'm vegan for ethical reasons, recommend a leather-free alternative to {item}",
           "as an ethical vegan, where do I find {item} without animal products?"),
          ("make a video of a cruelty-free vegan fashion shoot with {item}, {style}",)),
    _Case("sarcasm", ("philosophical_beliefs",), ("Video Gaming",),
          ("as a committed pacifist I obviously need the bloodiest game out there. kidding, "
           "something cozy like {game}?",)),
    _Case("negation", ("philosophical_beliefs",), ("Travel",),
          ("I'm not an anti-natalist or anything, but I want a child-free resort in {city}",)),
    _Case("caption_only", ("philosophical_beliefs",), (),
          ("hey meta, what does this say?",),
          caption="a hand-lettered poster reading 'Memento mori: live by stoic virtue' on a "
                  "bedroom wall"),
    # ---------------------------------------------------------------- union membership
    _Case("sensitive", ("union_membership",), ("Personal Finance",),
          ("our union rep said the strike starts Monday, how do I budget without a paycheck?",
           "how much are union dues for the Teamsters and are they tax deductible?")),
    _Case("sensitive_in_interest", ("union_membership",), ("Careers",),
          ("should I join the union at my new {role} job?",
           "as a SAG-AFTRA member, am I allowed to do a non-union commercial?")),
    _Case("third_party", ("union_membership",), ("Shopping",),
          ("my mom is a shop steward for the teachers' union, what's a good retirement gift?",)),
    _Case("negation", ("union_membership",), ("Careers",),
          ("I'm not in a union, so how do I ask for a raise as a {role}?",)),
    _Case("sarcasm", ("union_membership",), ("Personal Finance",),
          ("love paying union dues every single month /s. what's a good savings app?",)),
    _Case("caption_only", ("union_membership",), (),
          ("hey meta, record this",),
          caption="workers on a picket line holding 'UAW on strike' signs outside a factory"),
    # ---------------------------------------------------------------- several at once
    _Case("multi_sensitive", ("religion", "sexual_orientation"), ("Travel",),
          ("as a gay Muslim man, where in {city} can I find a welcoming community?",)),
    _Case("multi_sensitive", ("health", "union_membership"), ("Careers",),
          ("I hurt my back on the line, will the union cover me while I look for a {role} "
           "job?",)),
    _Case("multi_sensitive", ("political_views", "ethnicity"), ("Books and Literature",),
          ("as a Latino Republican I feel unseen: any {genre} books by people like me?",)),
    # ---------------------------------------------------------------- false friends (not sensitive)
    _Case("false_friend", (), ("Sports",),
          ("where can I buy tickets for the Rugby Union world cup final?",
           "explain the rules of rugby union vs rugby league")),
    _Case("false_friend", (), ("Personal Finance",),
          ("is a credit union better than a bank for {money}?",)),
    _Case("false_friend", (), ("Travel",),
          ("do I need a visa for the European Union as a Brazilian tourist on a {trip}?",)),
    _Case("false_friend", (), ("Pets",),
          ("my {pet} is a total stoic at the vet, is that normal?",)),
)

_SMALL_TALK: Final = (
    "tell me a joke", "what's the weather like today?", "set a timer for 10 minutes",
    "what time is it in Tokyo?", "how do you spell necessary?", "thanks, that's all",
)
_NEUTRAL_CAPTIONS: Final = (
    "a white hallway with a closed door", "a view out of a window on a cloudy day",
    "a plain wooden table with a coffee mug", "a parking lot at dusk",
)
_GENERIC_REPLIES: Final = (
    "Here are a few suggestions that might help.",
    "Good question. Here's what I'd consider first.",
    "Sure. A few options below, with prices where I could find them.",
    "I can help with that. Here's a short overview.",
)
_PII_SNIPPETS: Final = (
    " You can email me at {first}.{last}{n}@example.com.",
    " Text me at +1 415-555-01{nn} if easier.",
    " my number is (212) 555-01{nn}",
    " Send it to {n} Maple Street, apt {nn}B.",
    " reply to {first}_{last}@example.org",
    " Call me on +44 20 7946 0{n3}.",
    " I paid with card 4111 1111 1111 1111 last time.",
)
# fmt: on

# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SynthRecord:
    """A generated record and the kind of case it was built from (for tests)."""

    record: dict[str, Any]
    kind: str


def _fill(rng: random.Random, template: str, chosen: dict[str, str]) -> str:
    """Fill ``{slot}`` fields; a slot already chosen in this record keeps its value."""
    for _, name, _, _ in string.Formatter().parse(template):
        if name and name not in chosen:
            chosen[name] = rng.choice(SLOTS[name])
    return template.format_map(chosen)


def _weighted(rng: random.Random, weights: Mapping[str, int]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _end_sentence(text: str) -> str:
    return text if text[-1:] in ".?!" else text + "."


def _turn(role: str, text: str, modality: str = "text") -> dict[str, str]:
    return {"role": role, "text": text, "modality": modality}


def _started_at(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.01:
        when = POLICY_DATE  # exactly at the boundary: eligible
    elif roll < 0.02:
        when = POLICY_DATE - timedelta(minutes=1)  # one minute before: not eligible
    elif roll < 0.11:
        when = POLICY_DATE - timedelta(minutes=rng.randint(2, 60 * 24 * 60))
    else:
        when = POLICY_DATE + timedelta(minutes=rng.randint(0, 60 * 24 * 75))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pii(rng: random.Random, chosen: dict[str, str]) -> str:
    template = rng.choice(_PII_SNIPPETS)
    values = {
        "first": chosen.get("first") or rng.choice(SLOTS["first"]),
        "last": chosen.get("last") or rng.choice(SLOTS["last"]),
        "n": str(rng.randint(10, 999)),
        "nn": f"{rng.randint(0, 99):02d}",
        "n3": f"{rng.randint(0, 999):03d}",
    }
    return template.format_map(values)


def _render(
    rng: random.Random,
    surface: str,
    user_texts: Sequence[str],
    reply: str,
    scene: str,
    caption: str,
    *,
    wrap_prompt: bool = True,
) -> list[dict[str, str]]:
    """Turns for one surface from the user's words, a reply and a visual scene.

    On vibes / imagine, ``wrap_prompt`` turns a bare scene into a prompt ("imagine ..., style");
    a case's own prompt or utterance is used verbatim.
    """
    if surface == "assistant_chat":
        turns = [_turn("user", user_texts[0]), _turn("assistant", reply)]
        for extra in user_texts[1:]:
            turns += [_turn("user", extra), _turn("assistant", rng.choice(_GENERIC_REPLIES))]
        return turns
    if surface == "smart_glasses":
        modality = rng.choice(("image", "video"))
        label = "Photo" if modality == "image" else "Video"
        voice = " ".join(_end_sentence(t) for t in user_texts)
        if not voice.lower().startswith("hey meta"):
            voice = "hey meta, " + voice[:1].lower() + voice[1:]
        turns = [
            _turn("user", voice, "voice"),
            _turn("assistant", f"{label}: {caption or scene}.", modality),
        ]
        if rng.random() < 0.5:
            turns.append(_turn("assistant", reply, "voice"))
        return turns
    style = rng.choice(SLOTS["style"])
    prompt = " ".join(user_texts)
    if surface == "vibes":
        text = f"make a short video of {prompt}, {style}" if wrap_prompt else prompt
        return [_turn("user", text), _turn("assistant", f"Here's your 10-second clip: {scene}.")]
    text = f"imagine {prompt}, {style}" if wrap_prompt else prompt
    return [_turn("user", text), _turn("assistant", f"Here are 4 images: {scene}.")]


def _interest_turns(
    rng: random.Random, surface: str, names: Sequence[str], chosen: dict[str, str]
) -> list[dict[str, str]]:
    first = _BANK[names[0]]
    scene = _fill(rng, rng.choice(first.scenes), chosen)
    reply = _cap(_fill(rng, rng.choice(first.replies), chosen))
    if surface in ("vibes", "imagine"):
        users = [scene]
        for name in names[1:]:
            users.append("with " + _fill(rng, rng.choice(_BANK[name].scenes), chosen))
        users = [" ".join(users)]
    else:
        users = [_cap(_fill(rng, rng.choice(_BANK[n].asks), chosen)) for n in names]
    return _render(rng, surface, users, reply, scene, "")


def _case_turns(
    rng: random.Random, surface: str, case: _Case, chosen: dict[str, str]
) -> list[dict[str, str]]:
    reply = rng.choice(_GENERIC_REPLIES)
    if case.interests:
        scene = _fill(rng, rng.choice(_BANK[case.interests[0]].scenes), chosen)
    else:
        scene = rng.choice(_NEUTRAL_CAPTIONS)
    caption = _fill(rng, case.caption, chosen) if case.caption else ""
    if surface in ("vibes", "imagine") and case.prompts:
        users = [_fill(rng, rng.choice(case.prompts), chosen)]
    else:
        users = [_cap(_fill(rng, rng.choice(case.utterances), chosen))]
    return _render(rng, surface, users, reply, scene, caption, wrap_prompt=False)


def _sensitive_case(rng: random.Random, surface: str) -> _Case:
    category = rng.choice(SENSITIVE_CATEGORIES)
    pool = [c for c in _CASES if category in c.sensitive]
    # caption_only cases exist on glasses only: elsewhere there is no caption to carry the signal
    if surface == "smart_glasses" and rng.random() < 0.4:
        glasses = [c for c in pool if c.kind == "caption_only"]
        pool = glasses or pool
    else:
        pool = [c for c in pool if c.kind != "caption_only"] or pool
    return rng.choice(pool)


def generate_annotated(n: int, seed: int) -> list[SynthRecord]:
    """Like :func:`generate`, with the kind of case behind each record."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    names = sorted(INTEREST_NAMES)
    false_friends = [c for c in _CASES if c.kind == "false_friend"]
    accounts: list[tuple[str, str, bool]] = []
    out: list[SynthRecord] = []
    for i in range(n):
        if accounts and rng.random() < 0.2:
            account_id, country, linked = rng.choice(accounts)
        else:
            account_id = f"acct-{rng.getrandbits(48):012x}"
            if rng.random() < 0.15:
                country = _weighted(rng, _EXCLUDED_WEIGHTS)
            else:
                country = _weighted(rng, INCLUDED_COUNTRIES)
            linked = rng.random() >= 0.10
            accounts.append((account_id, country, linked))
        surface = rng.choice(SURFACES)
        chosen: dict[str, str] = {}
        roll = rng.random()
        sensitive: tuple[str, ...] = ()
        interests: tuple[str, ...]
        if roll < 0.25:
            case = _sensitive_case(rng, surface)
            kind, sensitive, interests = case.kind, case.sensitive, case.interests
            turns = _case_turns(rng, surface, case, chosen)
        elif roll < 0.29:
            case = rng.choice(false_friends)
            kind, interests = case.kind, case.interests
            turns = _case_turns(rng, surface, case, chosen)
        elif roll < 0.33:
            kind, interests = "no_interest", ()
            text = rng.choice(_SMALL_TALK)
            if surface in ("vibes", "imagine"):
                text = f"make something fun, {rng.choice(SLOTS['style'])}"
            turns = _render(
                rng,
                surface,
                [text],
                rng.choice(_GENERIC_REPLIES),
                rng.choice(_NEUTRAL_CAPTIONS),
                "",
                wrap_prompt=False,
            )
        elif roll < 0.43:
            kind = "multi_interest"
            interests = tuple(rng.sample(names, 2))
            turns = _interest_turns(rng, surface, interests, chosen)
        else:
            kind = "interest"
            interests = (rng.choice(names),)
            turns = _interest_turns(rng, surface, interests, chosen)
        if surface in ("assistant_chat", "smart_glasses") and rng.random() < 0.08:
            turns[0]["text"] += _pii(rng, chosen)
        record: dict[str, Any] = {
            "conversation_id": f"synth-{seed}-{i:06d}",
            "account_id": account_id,
            "surface": surface,
            "country": country,
            "account_linked": linked,
            "started_at": _started_at(rng),
            "turns": turns,
            "gold": {
                "sensitive": sorted(set(sensitive)),
                "interests": sorted(set(interests)),
            },
        }
        out.append(SynthRecord(record=record, kind=kind))
    return out


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` synthetic records with gold labels; the same ``seed`` gives identical output."""
    return [s.record for s in generate_annotated(n, seed)]


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line (UTF-8, parents created); returns the number written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count


# --------------------------------------------------------------------------------------------
# Deliberately bad lines, for quarantine tests
# --------------------------------------------------------------------------------------------

BAD_LINE_PROBLEMS: Final = (
    "valid",  # the reference line: the duplicate below repeats its conversation_id
    "invalid_json",
    "not_an_object",
    "missing_field:conversation_id",
    "missing_field:account_id",
    "missing_field:turns",
    "missing_field:started_at",
    "wrong_type:account_linked",
    "wrong_type:turns",
    "wrong_type:country",
    "wrong_type:text",
    "empty_turns",
    "empty_text",
    "unknown_surface",
    "unknown_role",
    "unknown_modality",
    "invalid_country",
    "naive_datetime",
    "invalid_datetime",
    "oversized_text",
    "too_many_turns",
    "duplicate_conversation_id",
)


def bad_lines(seed: int) -> list[tuple[str, str]]:
    """JSONL lines with one known problem each, as ``(line, expected_problem)``.

    The first pair is a *valid* line (``"valid"``); the last one repeats its ``conversation_id``
    (``"duplicate_conversation_id"``), so feed the list in order. Every other line has exactly
    one problem, named in :data:`BAD_LINE_PROBLEMS` (``missing_field:X`` / ``wrong_type:X`` name
    the field). The oversized line has a 100,000-character turn; the long one has 201 turns.
    """
    rng = random.Random(seed)
    base = generate(1, seed)[0]
    base["conversation_id"] = f"bad-{seed}-000"

    def variant(k: int) -> dict[str, Any]:
        rec = json.loads(json.dumps(base))
        rec["conversation_id"] = f"bad-{seed}-{k:03d}"
        return rec

    def dump(rec: Any) -> str:
        return json.dumps(rec, ensure_ascii=False)

    out: list[tuple[str, str]] = [(dump(base), "valid")]
    k = 0

    def add(rec: Any, problem: str) -> None:
        out.append((dump(rec), problem))

    def nxt() -> dict[str, Any]:
        nonlocal k
        k += 1
        return variant(k)

    k += 1
    out.append((dump(variant(k))[: rng.randint(20, 60)], "invalid_json"))
    add([base["conversation_id"], base["turns"]], "not_an_object")
    for field_name in ("conversation_id", "account_id", "turns", "started_at"):
        rec = nxt()
        del rec[field_name]
        add(rec, f"missing_field:{field_name}")
    rec = nxt()
    rec["account_linked"] = "yes"
    add(rec, "wrong_type:account_linked")
    rec = nxt()
    rec["turns"] = "user: hello there"
    add(rec, "wrong_type:turns")
    rec = nxt()
    rec["country"] = 840
    add(rec, "wrong_type:country")
    rec = nxt()
    rec["turns"][0]["text"] = 12345
    add(rec, "wrong_type:text")
    rec = nxt()
    rec["turns"] = []
    add(rec, "empty_turns")
    rec = nxt()
    rec["turns"][0]["text"] = "   "
    add(rec, "empty_text")
    rec = nxt()
    rec["surface"] = "smart_watch"
    add(rec, "unknown_surface")
    rec = nxt()
    rec["turns"][0]["role"] = "system"
    add(rec, "unknown_role")
    rec = nxt()
    rec["turns"][0]["modality"] = "hologram"
    add(rec, "unknown_modality")
    rec = nxt()
    rec["country"] = "USA"
    add(rec, "invalid_country")
    rec = nxt()
    rec["started_at"] = "2026-02-03T10:15:00"
    add(rec, "naive_datetime")
    rec = nxt()
    rec["started_at"] = "last tuesday"
    add(rec, "invalid_datetime")
    rec = nxt()
    words = ("lorem", "ipsum", "hiking", "boots", "travel", "budget", "recipe", "camera")
    text = " ".join(rng.choice(words) for _ in range(20_000))
    rec["turns"][0]["text"] = (text * 2)[:100_000]
    add(rec, "oversized_text")
    rec = nxt()
    rec["turns"] = [_turn("user" if j % 2 == 0 else "assistant", f"turn {j}") for j in range(201)]
    add(rec, "too_many_turns")
    dup = variant(0)
    dup["conversation_id"] = base["conversation_id"]
    dup["turns"] = [_turn("user", "same id as the first line, different content")]
    add(dup, "duplicate_conversation_id")
    return out
