"""Procedurally generated task families for the laptop demo: the whole T0 recipe on data we make.

T0 trains on a multitask mixture of prompted datasets and evaluates zero-shot on held-out task
clusters. The demo needs the same shape at toy scale, with data nobody has to download and
nothing copied from an existing dataset, so this module invents a small "world" (made-up
words with hidden properties) from a seed and writes several task families over it as a local
mirror, `DATA_DIR/<family>/{train,validation}.jsonl`, with Hugging Face-style fields and an
integer `label` — exactly what the project-authored templates in `tasks/templates/<family>/`
are written against.

Families share the world's knowledge the way real tasks share knowledge of language: the
polarity of a made-up adjective is what `synth_polarity` (trained) teaches and what
`synth_completion` (held out) needs; the category of a made-up noun is what `synth_category`
(trained) teaches and `synth_same_kind` (held out) needs. Trained families also keep some of
their templates out of training ("unseen templates", `Family.unseen_templates`).

Everything is deterministic given the seed: the same seed writes byte-identical files.
Pure Python (no TensorFlow); it lives in data/ because it is a data source.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import random
from typing import Callable

# Label names of the families; the templates' answer choices spell the same classes.
CATEGORIES = ("animal", "fruit", "tool", "place")
COLORS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "big")
RULE_CLASSES = ("glim", "vonk")  # the hidden rule: glim <=> red or circle
NOUNS = ("soup", "hotel", "movie", "chair", "trip", "book", "concert", "bike", "garden", "song",
         "lamp", "party", "train", "cake", "game", "class")
NUMBER_RANGE = (1, 30)  # synth_compare draws two distinct integers from this range

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclasses.dataclass(frozen=True)
class World:
    """The hidden knowledge every family is generated from (made-up words and their properties)."""
    positive: tuple[str, ...]   # made-up adjectives that mean "good"
    negative: tuple[str, ...]   # made-up adjectives that mean "bad"
    nouns: dict[str, int]       # made-up noun -> index into CATEGORIES

    def polarity(self, adjective: str) -> int:
        """1 for a positive adjective, 0 for a negative one (KeyError for an unknown word)."""
        if adjective in self.positive:
            return 1
        if adjective in self.negative:
            return 0
        raise KeyError(f"{adjective!r} is not in the made-up polarity lexicon")


def make_world(seed: int = 0, words_per_polarity: int = 16, nouns_per_category: int = 12) -> World:
    """Invent the lexicon: distinct pseudo-words (consonant-vowel patterns), split into roles."""
    rng = random.Random(f"world-{seed}")
    needed = 2 * words_per_polarity + nouns_per_category * len(CATEGORIES)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < needed:
        word = _pseudo_word(rng)
        if word not in seen:
            seen.add(word)
            words.append(word)
    positive = tuple(words[:words_per_polarity])
    negative = tuple(words[words_per_polarity:2 * words_per_polarity])
    noun_words = words[2 * words_per_polarity:]
    nouns = {w: i // nouns_per_category for i, w in enumerate(noun_words)}
    return World(positive=positive, negative=negative, nouns=nouns)


def _pseudo_word(rng: random.Random) -> str:
    """CVCVC, e.g. 'bakot': pronounceable, rarely an English word, a few SentencePiece pieces."""
    c, v = _CONSONANTS, _VOWELS
    return rng.choice(c) + rng.choice(v) + rng.choice(c) + rng.choice(v) + rng.choice(c)


# ---------------------------------------------------------------------------------------------
# Example generators: one function per family, (world, rng, label) -> example dict.
# The label is drawn first (balanced classes); the example is built to have that label.
# ---------------------------------------------------------------------------------------------

_REVIEW_PATTERNS = (
    "The {noun} was {a}.",
    "I found the {noun} {a} and {b}.",
    "What a {a} {noun}!",
    "My {noun} felt {a}, really {b}.",
    "Honestly, this {noun} is {a}.",
    "We thought the {noun} was quite {a} and a bit {b}.",
)


def _polarity_example(world: World, rng: random.Random, label: int) -> dict:
    lexicon = world.positive if label == 1 else world.negative
    a, b = rng.sample(lexicon, 2)
    pattern = rng.choice(_REVIEW_PATTERNS)
    topic = rng.choice(NOUNS)  # drawn after the pattern, as before `topic` was a field
    return {"review": pattern.format(noun=topic, a=a, b=b), "topic": topic, "label": label}


def _category_example(world: World, rng: random.Random, label: int) -> dict:
    word = rng.choice([w for w, c in world.nouns.items() if c == label])
    return {"word": word, "label": label}


def _compare_example(world: World, rng: random.Random, label: int) -> dict:
    """label 0: the first number is larger; label 1: the second one is."""
    low, high = sorted(rng.sample(range(NUMBER_RANGE[0], NUMBER_RANGE[1] + 1), 2))
    first, second = (high, low) if label == 0 else (low, high)
    return {"number_a": first, "number_b": second, "label": label}


def rule_label(color: str, shape: str) -> int:
    """The hidden rule of synth_rule: glim (0) when the object is red or a circle, else vonk (1)."""
    return 0 if (color == "red" or shape == "circle") else 1


def _rule_example(world: World, rng: random.Random, label: int) -> dict:
    while True:
        color, shape = rng.choice(COLORS), rng.choice(SHAPES)
        if rule_label(color, shape) == label:
            return {"size": rng.choice(SIZES), "color": color, "shape": shape, "label": label}


_COMPLETION_PREMISES = ("The {noun} was {a}.", "Everyone said the {noun} was {a}.",
                        "Our {noun} turned out {a}.")
_COMPLETION_ENDINGS = (("We were happy with it.", "We were upset about it."),
                       ("People smiled all day.", "People complained all day."),
                       ("I would do it again.", "I never want that again."))


def _completion_example(world: World, rng: random.Random, label: int) -> dict:
    """A premise with one made-up adjective; the right ending matches its polarity.

    label = index of the right ending among (choice1, choice2); `polarity` is 1 when the
    adjective is positive (a template may ask about it directly).
    """
    polarity = rng.randrange(2)
    adjective = rng.choice(world.positive if polarity else world.negative)
    premise = rng.choice(_COMPLETION_PREMISES).format(noun=rng.choice(NOUNS), a=adjective)
    good, bad = rng.choice(_COMPLETION_ENDINGS)
    right, wrong = (good, bad) if polarity else (bad, good)
    choices = (right, wrong) if label == 0 else (wrong, right)
    return {"premise": premise, "choice1": choices[0], "choice2": choices[1],
            "polarity": polarity, "label": label}


def _same_kind_example(world: World, rng: random.Random, label: int) -> dict:
    """label 1: both made-up nouns belong to the same category; 0: different ones."""
    first = rng.choice(sorted(world.nouns))
    same = [w for w, c in world.nouns.items() if c == world.nouns[first] and w != first]
    other = [w for w, c in world.nouns.items() if c != world.nouns[first]]
    second = rng.choice(sorted(same) if label == 1 else sorted(other))
    return {"word1": first, "word2": second, "label": label}


@dataclasses.dataclass(frozen=True)
class Family:
    """One synthetic dataset: its generator, its T0 role, and which of its templates are unseen."""
    name: str                      # dataset name: DATA_DIR/<name>/ and tasks/templates/<name>/
    cluster: str                   # task cluster (T0 holds out whole clusters)
    held_out: bool                 # True: never trained on; evaluated zero-shot
    num_classes: int               # chance accuracy = 1 / num_classes
    make_example: Callable[[World, random.Random, int], dict]
    unseen_templates: tuple[str, ...] = ()  # template names kept out of training

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("synth_polarity", "sentiment", False, 2, _polarity_example,
           unseen_templates=("feeling_short", "would_recommend")),
    Family("synth_category", "word_lookup", False, 4, _category_example,
           unseen_templates=("belongs_to", "dictionary_entry")),
    Family("synth_compare", "comparison", False, 2, _compare_example,
           unseen_templates=("bigger_one_is", "is_first_greater")),
    Family("synth_rule", "hidden_rule", False, 2, _rule_example,
           unseen_templates=("object_is_a", "which_kind")),
    Family("synth_completion", "sentence_completion", True, 2, _completion_example),
    Family("synth_same_kind", "word_relation", True, 2, _same_kind_example),
)}

SPLITS = {"train": 2000, "validation": 200}


def trained_families() -> list[str]:
    return [name for name, f in FAMILIES.items() if not f.held_out]


def held_out_families() -> list[str]:
    return [name for name, f in FAMILIES.items() if f.held_out]


def generate_examples(family: str, split: str, num_examples: int, seed: int = 0) -> list[dict]:
    """`num_examples` examples of `family`, with labels cycling so the classes are balanced.

    The stream of a split depends only on (seed, family, split), so adding a family or changing
    another split's size never changes these examples.
    """
    spec = _family(family)
    world = make_world(seed)
    rng = random.Random(f"{seed}-{family}-{split}")
    labels = [i % spec.num_classes for i in range(num_examples)]
    rng.shuffle(labels)
    examples = []
    for index, label in enumerate(labels):
        example = spec.make_example(world, rng, label)
        example["idx"] = index
        examples.append(example)
    return examples


def write_mirror(data_dir, seed: int = 0, splits: dict[str, int] | None = None,
                 families=None) -> dict[str, dict[str, int]]:
    """Write `data_dir/<family>/<split>.jsonl` for each family; returns {family: {split: n}}.

    Files are rewritten on every call (cheap), so the mirror always matches the seed and sizes.
    """
    data_dir = pathlib.Path(data_dir)
    splits = dict(SPLITS if splits is None else splits)
    written: dict[str, dict[str, int]] = {}
    for family in (FAMILIES if families is None else families):
        folder = data_dir / family
        folder.mkdir(parents=True, exist_ok=True)
        for split, count in splits.items():
            rows = generate_examples(family, split, count, seed)
            with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, sort_keys=True) + "\n")
            written.setdefault(family, {})[split] = len(rows)
    return written


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown synthetic family {name!r}; known: {', '.join(FAMILIES)} "
                       "(defined in t0_jax/data/synthetic.py)")
    return FAMILIES[name]


def rendered_lines(seed: int = 0, split: str = "train", examples_per_family: int = 400) -> list[str]:
    """Prompts and targets of every template of every family: the demo vocabulary's corpus.

    Held-out families are included on purpose: the vocabulary stands for "the language", which
    T5's vocabulary also covers for T0's held-out tasks; only the task supervision is held out.
    """
    from t0_jax.data import templates  # data/ sibling; imported here to keep generation light

    lines = []
    for family in FAMILIES:
        family_templates = templates.load_templates(family)
        for example in generate_examples(family, split, examples_per_family, seed):
            for template in family_templates:
                rendered = templates.render_example(template, example)
                if rendered is not None:
                    lines.extend((rendered.inputs, rendered.targets))
                    lines.extend(rendered.answer_choices or ())
    return lines


def train_vocabulary(out_path, seed: int = 0, vocab_size: int = 1000,
                     corpus_documents: int = 0) -> str:
    """A SentencePiece model (T5 id layout) trained on the families' rendered text and the
    first `corpus_documents` documents of the world's free-text corpus (t0_jax.data.corpus)."""
    from t0_jax.data import corpus  # noqa: PLC0415 - data/ sibling
    from t0_jax.data.vocabularies import train_sentencepiece

    lines = rendered_lines(seed) + corpus.documents(seed, corpus_documents)
    return train_sentencepiece(lines, out_path, vocab_size=vocab_size)


# ---------------------------------------------------------------------------------------------
# seqio tasks and mixtures of the demo (registry + T0 cap; imported lazily: seqio costs seconds)
# ---------------------------------------------------------------------------------------------

TRAIN_MIXTURE = "synth_train"                  # T0: every seen template of the trained families
PROMPT_MIXTURES = {"one_og": "synth_train_one_og_prompt",   # p = 1 (prompt ablation)
                   "all_og": "synth_train_all_og_prompts",  # every original-task template
                   "all": TRAIN_MIXTURE}                    # every trained template
EVAL_MIXTURE = "synth_eval_score_eval"         # every template of every family, ranked
KIND_MIXTURES = {"seen": "synth_seen_score_eval", "unseen": "synth_unseen_score_eval",
                 "held_out": "synth_held_out_score_eval"}
TASK_SPLITS = ("train", "validation")


def template_kind(family: str, template_name: str) -> str:
    """'held_out' (family never trained), 'unseen' (template kept out) or 'seen' (trained)."""
    spec = _family(family)
    if spec.held_out:
        return "held_out"
    return "unseen" if template_name in spec.unseen_templates else "seen"


def unseen_tasks() -> set:
    """Task names of the unseen templates of the trained families: out of every training run."""
    from t0_jax.data import registry  # noqa: PLC0415

    return {registry.task_name(f, None, t) for f in trained_families()
            for t in FAMILIES[f].unseen_templates}


def register_family_mixture(name: str, families, prompts: str = "all") -> dict:
    """A training mixture over `families` (their unseen templates excluded), built by the same
    code as T0's mixtures and prompt ablations (mixtures.register_dataset_mixture, T0's cap)."""
    from t0_jax.data import mixtures  # noqa: PLC0415

    for family in families:
        if _family(family).held_out:
            raise ValueError(f"{family} is a held-out family; a training mixture cannot hold it.")
    return mixtures.register_dataset_mixture(name, [(f, None) for f in families], prompts,
                                             exclude_tasks=unseen_tasks())


def register(vocab_path=None) -> dict[str, dict]:
    """Register every family's tasks and the demo mixtures; returns {mixture: {task: rate}}.

    Tasks come from the registry (one per template, plus `_score_eval` twins), so the demo runs
    the very code T0's datasets run. The training mixtures (T0's, and its prompt ablations
    PROMPT_MIXTURES) come from the code that builds t0_train / t0_train_one_og_prompt /
    t0_train_all_og_prompts, with T0's cap counting ALL templates of a dataset (unseen ones
    included, as T0 counts every template). Idempotent; `vocab_path` switches every task's
    vocabulary.
    """
    from t0_jax.data import mixtures, registry  # noqa: PLC0415 - seqio/TensorFlow

    if vocab_path is not None:
        registry.set_vocab_path(vocab_path)
    eval_rates: dict[str, dict] = {kind: {} for kind in KIND_MIXTURES}
    for family in FAMILIES:
        infos = registry.register_dataset_tasks(family, None, TASK_SPLITS,
                                                train_size=SPLITS["train"])
        for info in infos:
            if info.score_eval:
                kind = template_kind(family, info.template_name)
                eval_rates[kind][info.score_eval] = mixtures.ExampleCountRate("validation")
    out = {name: register_family_mixture(name, trained_families(), prompts)
           for prompts, name in PROMPT_MIXTURES.items()}
    evals = {EVAL_MIXTURE: {t: r for rates in eval_rates.values() for t, r in rates.items()}}
    evals.update({KIND_MIXTURES[kind]: rates for kind, rates in eval_rates.items()})
    for name, rates in evals.items():
        mixtures.add_mixture(name, rates)  # same path (and checks) as the T0 mixtures
    return out | evals


def task_kinds() -> dict[str, tuple[str, str]]:
    """{task or score_eval task name: (family, kind)} for every template of every family."""
    from t0_jax.data import registry, templates  # noqa: PLC0415

    out = {}
    for family in FAMILIES:
        for template in templates.load_templates(family):
            name = registry.task_name(family, None, template.name)
            kind = (family, template_kind(family, template.name))
            out[name] = out[name + registry.SCORE_EVAL_SUFFIX] = kind
    return out
