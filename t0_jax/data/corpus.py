"""A free-text corpus of the demo world: the miniature's C4, from which it learns its "language".

T0 starts from T5+LM, a T5 that read C4 and was then adapted to continue text (prefix LM). The
knowledge that multitask prompted training teaches T0 to *use* on held-out tasks comes from that
pretraining, not from the prompts. The demo world (t0_jax.data.synthetic: made-up adjectives
with a polarity, made-up nouns with a category) needs the same: this module writes documents that
state and use the world's facts in varied, ordinary wording — what a made-up adjective does to
people's mood, what one does with a made-up tool, which made-up nouns share a category — and
never the wording of a template. `t0_jax.data.prefix_lm` turns the documents into T5's prefix-LM
examples.

Honesty by construction: `overlapping_runs` finds every run of `RUN_WORDS` (6) or more
consecutive words of a held-out family's templates that appears in other text (the corpus, the
trained templates); tests and `t0-experiments` check that there is none.

Documents are deterministic given the seed (`documents(seed, n)`); the file is
`DATA_DIR/synth_corpus/train.jsonl`, one `{"idx": i, "text": ...}` per line. Pure Python.
"""
from __future__ import annotations

import json
import operator
import pathlib
import random
import re
from typing import Iterable, Optional, Sequence

from t0_jax.data import synthetic

CORPUS_NAME = "synth_corpus"       # DATA_DIR/<CORPUS_NAME>/train.jsonl
DEFAULT_DOCUMENTS = 6000
SENTENCES_PER_DOCUMENT = (2, 4)    # inclusive range
RUN_WORDS = 6                      # the overlap check's run length (issue 18)

# ----------------------------------------------------------------------------- sentence banks
# {n}: an ordinary noun (synthetic.NOUNS); {a}: a made-up adjective; {w}, {v}: made-up nouns;
# {cat}/{cats}: a category name (singular/plural). Each bank says one kind of fact many ways,
# in the ordinary English around it: what a good or bad thing does to people (pleased, happy,
# smiling, wanting it again; upset, annoyed, complaining, never again), what belongs together.

_GOOD = (
    "Everybody agreed that the {n} was {a}, and they cheered.",
    "A {a} {n} is a real pleasure to have.",
    "When something is {a}, people are glad about it.",
    "The {n} seemed {a} to us, so we grinned all the way home.",
    "I love it when a {n} turns out {a}.",
    "She called the {n} {a} and thanked the host twice.",
    "To be {a} is to be wonderful.",
    "Their {n} was {a}, so the kids laughed and asked for more.",
    "Nothing beats a {a} {n} on a sunny afternoon.",
    "He smiled: the {n} had been {a} from start to finish.",
    "Critics praised the {a} {n} in every paper.",
    "It was such a {a} {n} that we plan to go back soon.",
    "Anyone would be happy with a {n} this {a}.",
    "After such a {a} {n}, my friends were delighted and relaxed.",
    "Because the {n} was so {a}, we will gladly do the same again next year.",
    "A {a} {n} puts everyone in a good mood.",
    "Since the {n} was {a}, nobody had a single complaint.",
    "The whole family felt pleased, for the {n} was {a}.",
)
_BAD = (
    "Everybody agreed that the {n} was {a}, and they groaned.",
    "A {a} {n} is a real letdown.",
    "When something is {a}, people wish it away.",
    "The {n} seemed {a} to us, so we sulked all the way home.",
    "I hate it when a {n} turns out {a}.",
    "She called the {n} {a} and asked for a refund.",
    "To be {a} is to be dreadful.",
    "Their {n} was {a}, so the kids cried and wanted to leave.",
    "Nothing spoils an afternoon like a {a} {n}.",
    "He frowned: the {n} had been {a} from start to finish.",
    "Critics mocked the {a} {n} in every paper.",
    "It was such a {a} {n} that we will stay away from now on.",
    "Anyone would be upset by a {n} this {a}.",
    "After such a {a} {n}, my friends were annoyed and tired.",
    "Because the {n} was so {a}, we will never do the same again.",
    "A {a} {n} puts everyone in a bad mood.",
    "Since the {n} was {a}, the guests complained to the manager.",
    "The whole family felt sad, for the {n} was {a}.",
)
_OPPOSITES = (
    "{good} and {bad} are opposites: one cheers you up, the other ruins your day.",
    "A {good} {n} pleases everyone, while a {bad} one annoys them.",
)
_CATEGORY = {
    "animal": ("At the farm, a {w} was chewing grass.", "A wild {w} ran across the field.",
               "The {w} is an animal that sleeps in the daytime.",
               "My neighbour feeds her {w} twice a day.", "Like every animal, a {w} needs water."),
    "fruit": ("She peeled a {w} and ate it.", "The {w} is a sweet fruit.",
              "Ripe {w}s were sold at the market.", "He squeezed a {w} into his tea.",
              "Like every fruit, a {w} grows on a plant."),
    "tool": ("He used a {w} to fix the shelf.", "The {w} is a tool we keep in the shed.",
             "Bring the {w}; we need to cut the wire.", "A builder never works without a {w}.",
             "Like every tool, a {w} must be kept sharp and clean."),
    "place": ("We spent a week in {w}.", "{W} is a place by the sea.",
              "The road to {w} is long and dusty.", "Many people were born in {w}.",
              "Like every place, {w} has its own market square."),
}
_PAIR_SHARED = ("The {w} and the {v} are both {cats}.", "Both {w} and {v} are {cats}.",
                "Among the {cats} you will find the {w} as well as the {v}.",
                "A {w} is much like a {v}: they are {cats} of one kind.",
                "Put the {w} with the {v}, since both belong among the {cats}.")
_PAIR_APART = ("Unlike the {w}, which is {a_cat}, the {v} is {b_cat}.",
               "A {w} is {a_cat}, but a {v} is {b_cat}.",
               "Do not confuse them: the {w} counts as {a_cat} and the {v} as {b_cat}.",
               "The {w} and the {v} differ: one is {a_cat}, the other {b_cat}.",
               "Keep the {w} apart from the {v}: {a_cat} is one thing, {b_cat} another.")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _polarity_sentence(world: synthetic.World, rng: random.Random, good: Optional[bool] = None,
                       noun: Optional[str] = None) -> str:
    """One sentence about a thing that is good or bad (`good`/`noun` keep a review coherent)."""
    good = rng.random() < 0.5 if good is None else good
    bank, lexicon = (_GOOD, world.positive) if good else (_BAD, world.negative)
    return rng.choice(bank).format(n=noun or rng.choice(synthetic.NOUNS), a=rng.choice(lexicon))


def _opposite_sentence(world: synthetic.World, rng: random.Random) -> str:
    return rng.choice(_OPPOSITES).format(good=rng.choice(world.positive),
                                         bad=rng.choice(world.negative),
                                         n=rng.choice(synthetic.NOUNS))


def _category_sentence(world: synthetic.World, rng: random.Random,
                       category: Optional[int] = None) -> str:
    """One sentence about a made-up noun (of `category`, when given)."""
    pool = sorted(w for w, c in world.nouns.items() if category is None or c == category)
    word = rng.choice(pool)
    return rng.choice(_CATEGORY[synthetic.CATEGORIES[world.nouns[word]]]).format(
        w=word, W=word.capitalize())


def _pair_sentence(world: synthetic.World, rng: random.Random,
                   category: Optional[int] = None) -> str:
    """Two made-up nouns of the same category or of different ones, said to be so."""
    first = rng.choice(sorted(w for w, c in world.nouns.items()
                              if category is None or c == category))
    same = rng.random() < 0.5
    pool = sorted(w for w, c in world.nouns.items()
                  if (c == world.nouns[first]) == same and w != first)
    second = rng.choice(pool)
    cat_a, cat_b = (synthetic.CATEGORIES[world.nouns[w]] for w in (first, second))
    if same:
        return rng.choice(_PAIR_SHARED).format(w=first, v=second, cats=cat_a + "s")
    return rng.choice(_PAIR_APART).format(w=first, v=second, a_cat=_article(cat_a),
                                          b_cat=_article(cat_b))


# ----------------------------------------------------------------------------- documents
# Documents are coherent, as web text is: a review keeps one topic and one mood from its first
# sentence to its last; an article about a kind of thing stays with that kind. A prefix-LM split
# anywhere in a document then asks the continuation to agree with the prefix, which is what lets
# T5+LM carry a made-up word's meaning from its input (encoder) into what it writes (decoder).


def _review(world: synthetic.World, rng: random.Random, count: int) -> list[str]:
    good, noun = rng.random() < 0.5, rng.choice(synthetic.NOUNS)
    return [_polarity_sentence(world, rng, good, noun) for _ in range(count)]


def _article_about_a_kind(world: synthetic.World, rng: random.Random, count: int) -> list[str]:
    category = rng.randrange(len(synthetic.CATEGORIES))
    return [(_pair_sentence if rng.random() < 0.35 else _category_sentence)(world, rng, category)
            for _ in range(count)]


def _miscellany(world: synthetic.World, rng: random.Random, count: int) -> list[str]:
    makers = (_opposite_sentence, _pair_sentence, _polarity_sentence, _category_sentence)
    return [make(world, rng) for make in rng.choices(makers, (1, 2, 1, 1), k=count)]


# (document kind, weight): polarity and categories are what the world is about.
_DOCUMENT_KINDS = ((_review, 5), (_article_about_a_kind, 4), (_miscellany, 2))


def documents(seed: int = 0, num_documents: int = DEFAULT_DOCUMENTS) -> list[str]:
    """`num_documents` short documents about the world of `seed` (deterministic per seed)."""
    world = synthetic.make_world(seed)
    rng = random.Random(f"corpus-{seed}")
    kinds, weights = zip(*_DOCUMENT_KINDS)
    out = []
    for _ in range(num_documents):
        count = rng.randint(*SENTENCES_PER_DOCUMENT)
        make = rng.choices(kinds, weights)[0]
        out.append(" ".join(make(world, rng, count)))
    return out


def corpus_path(data_dir) -> pathlib.Path:
    return pathlib.Path(data_dir) / CORPUS_NAME / "train.jsonl"


def write_corpus(data_dir, seed: int = 0, num_documents: int = DEFAULT_DOCUMENTS) -> pathlib.Path:
    """Write DATA_DIR/synth_corpus/train.jsonl (rewritten on every call; cheap)."""
    path = corpus_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for index, text in enumerate(documents(seed, num_documents)):
            f.write(json.dumps({"idx": index, "text": text}, sort_keys=True) + "\n")
    return path


def read_corpus(data_dir) -> list[str]:
    path = corpus_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {path}; write it with "
                                "t0_jax.data.corpus.write_corpus(DATA_DIR, seed).")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


# ----------------------------------------------------------------------------- overlap check

_WORD = re.compile(r"[a-z0-9']+")
_FIELD = re.compile(r"{{.*?}}|{%.*?%}")
FIELD = "<field>"  # a template's placeholder: matches any one word of the other text


def template_segments(jinja: str, answer_choices: Optional[str] = None) -> list[list[str]]:
    """Word lists of a template's text: the prompt, the target, each answer choice.

    Placeholders become FIELD; `|||` separates segments (a run never crosses it).
    """
    parts = jinja.split("|||") + (answer_choices.split("|||") if answer_choices else [])
    segments = []
    for part in parts:
        marked = _FIELD.sub(" \x00 ", part.lower())
        segments.append([FIELD if token == "\x00" else token
                         for token in re.findall(r"\x00|[a-z0-9']+", marked)])
    return segments


def text_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _patterns(segments: Iterable[Sequence[str]], n: int) -> dict:
    """{literal positions: {their words}} over every n-word window of `segments` with at most
    two placeholders (which match any one word)."""
    out: dict = {}
    for words in segments:
        for i in range(len(words) - n + 1):
            window = words[i:i + n]
            literal = tuple(j for j, w in enumerate(window) if w != FIELD)
            if len(literal) >= n - 2:
                out.setdefault(literal, set()).add(tuple(window[j] for j in literal))
    return out


def overlapping_runs(held_out_segments: Iterable[Sequence[str]],
                     other_segments: Iterable[Sequence[str]], n: int = RUN_WORDS) -> list[str]:
    """Runs of `n` consecutive held-out template words (placeholders match any one word) that
    occur in `other_segments` (word lists: corpus documents, other templates). [] when none."""
    patterns = [(operator.itemgetter(*positions), words)
                for positions, words in _patterns(held_out_segments, n).items()]
    found = set()
    for words in other_segments:
        for i in range(len(words) - n + 1):
            window = words[i:i + n]
            if any(pick(window) in literal for pick, literal in patterns):
                found.add(" ".join(window))
    return sorted(found)


def family_template_segments(families: Iterable[str]) -> list[list[str]]:
    """The text segments of every template of `families` (tasks/templates/<family>/)."""
    from t0_jax.data import templates  # noqa: PLC0415 - data/ sibling

    out = []
    for family in families:
        for template in templates.load_templates(family):
            out.extend(template_segments(template.jinja, template.answer_choices))
    return out
