"""A seeded generator of smart-home requests for triage tests: the parent's training data and clean traffic drawn
from one distribution, so a check calibrated on the first has its nominal error rate on the second."""

from __future__ import annotations

import random

LABELS = ["lights_on", "lights_off", "weather"]
ROOMS = ["kitchen", "hall", "den", "garage", "attic", "porch", "bedroom", "study", "office", "bathroom", "cellar", "nursery",
         "pantry", "loft", "lounge", "patio", "library", "landing", "workshop", "laundry room"]
CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Boston", "Madrid", "Dublin", "Nairobi", "Quito", "Seoul", "Perth",
          "Denver", "Lagos", "Vienna", "Hanoi", "Austin", "Zurich", "Havana", "Delhi"]
THINGS = ["lights", "lamp", "light", "ceiling light", "lamps", "spotlights", "reading lamp", "strip lights"]
PREFIXES = ["", "", "please ", "could you ", "hey, ", "can you ", "I'd like you to ", "would you "]
SUFFIXES = ["", "", " please", " now", " thanks", " for me", " right away"]
SWITCH = {"lights_on": (["turn on", "switch on", "power on", "put on"], "on"),
          "lights_off": (["turn off", "switch off", "power off", "shut off"], "off")}
QUESTIONS = ["what's the weather", "will it rain", "how hot is it", "what's the forecast", "is it going to snow",
             "how windy is it", "do I need an umbrella", "will it be sunny", "how cold will it get", "is a storm coming"]
WHEN = ["", " today", " tomorrow", " this weekend", " tonight", " on Saturday", " next week"]


def utterance(label: str, rng: random.Random) -> str:
    prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
    if label == "weather":
        return f"{prefix}{rng.choice(QUESTIONS)} in {rng.choice(CITIES)}{rng.choice(WHEN)}{suffix}"
    verbs, particle = SWITCH[label]
    room, thing = rng.choice(ROOMS), rng.choice(THINGS)
    if rng.random() < 0.5:
        return f"{prefix}{rng.choice(verbs)} the {room} {thing}{suffix}"
    return f"{prefix}turn the {thing} in the {room} {particle}{suffix}"


def sample(per_label: int, seed: int, labels: list[str] = LABELS) -> list[tuple[str, str]]:
    """``per_label`` distinct (text, label) pairs per label."""
    rng = random.Random(seed)
    out = []
    for label in labels:
        seen: set[str] = set()
        while len(seen) < per_label:
            seen.add(utterance(label, rng))
        out += [(t, label) for t in sorted(seen)]
    return out


OFF_DOMAIN = ["how do I cook {}", "what is a good recipe for {}", "who invented {}", "tell me a fun fact about {}",
              "how much does {} cost", "where can I buy {}", "write a poem about {}", "is {} healthy"]
TOPICS = ["risotto", "pancakes", "the telescope", "penguins", "a used bicycle", "saffron", "the printing press", "kombucha",
          "volcanoes", "a violin", "sourdough", "jellyfish", "chess", "lentils", "the steam engine", "origami"]


def off_domain(n: int, seed: int) -> list[str]:
    """``n`` distinct requests that are not smart-home requests at all (off-domain poison)."""
    rng = random.Random(seed)
    seen: list[str] = []
    while len(seen) < n:
        text = f"{rng.choice(PREFIXES)}{rng.choice(OFF_DOMAIN).format(rng.choice(TOPICS))}"
        if text not in seen:
            seen.append(text)
    return seen
