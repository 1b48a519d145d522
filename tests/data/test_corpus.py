"""The demo world's free-text corpus (the miniature's C4): deterministic per seed, true to the
world's facts, and free of every held-out template's wording (issue 18's 6-word check)."""
import re

import pytest

from t0_jax.data import corpus, synthetic
from t0_jax.bin import experiments


def test_corpus_is_deterministic_per_seed(tmp_path):
    a = corpus.write_corpus(tmp_path / "a", seed=3, num_documents=200).read_bytes()
    b = corpus.write_corpus(tmp_path / "b", seed=3, num_documents=200).read_bytes()
    c = corpus.write_corpus(tmp_path / "c", seed=4, num_documents=200).read_bytes()
    assert a == b and a != c
    assert corpus.read_corpus(tmp_path / "a") == corpus.documents(3, 200)
    assert corpus.documents(3, 50) == corpus.documents(3, 200)[:50]  # a prefix of the stream


def _bank_regex(pattern: str) -> re.Pattern:
    """A bank sentence as a regex capturing its made-up word ({a} or {w}/{W})."""
    escaped = re.escape(pattern)
    for field, group in (("\\{a\\}", "(?P<a>[a-z]+)"), ("\\{w\\}", "(?P<w>[a-z]+)"),
                         ("\\{W\\}", "(?P<W>[A-Z][a-z]+)"), ("\\{n\\}", "[a-z]+")):
        escaped = escaped.replace(field, group)
    return re.compile(escaped)


def test_sentences_state_the_worlds_facts():
    """Every polarity sentence uses an adjective of its polarity; every category sentence a
    noun of its category; every word of the world appears."""
    world = synthetic.make_world(0)
    text = " ".join(corpus.documents(0, 2000))
    checked = 0
    for bank, lexicon in ((corpus._GOOD, world.positive), (corpus._BAD, world.negative)):
        for pattern in bank:
            for m in _bank_regex(pattern).finditer(text):
                assert m.group("a") in lexicon, (pattern, m.group(0))
                checked += 1
    for category, bank in corpus._CATEGORY.items():
        for pattern in bank:
            for m in _bank_regex(pattern).finditer(text):
                word = (m.groupdict().get("w") or m.groupdict()["W"]).lower()
                assert synthetic.CATEGORIES[world.nouns[word]] == category, m.group(0)
                checked += 1
    assert checked > 2000
    words = set(corpus.text_words(text))
    assert set(world.positive) | set(world.negative) | set(world.nouns) <= words


def test_no_held_out_template_wording_in_the_corpus_or_trained_templates():
    """No run of 6 consecutive words of a held-out family's templates (a placeholder matches
    any one word) in a trained template or in the corpus the experiments use."""
    plan = experiments.load_plan()
    held = corpus.family_template_segments(plan.held_out_families)
    trained = corpus.family_template_segments(synthetic.trained_families())
    documents = [corpus.text_words(d) for d in corpus.documents(plan.world_seed,
                                                                plan.corpus_documents)]
    assert corpus.overlapping_runs(held, trained) == []
    assert corpus.overlapping_runs(held, documents) == []
    experiments.check_no_overlap(plan)  # what t0-experiments and make demo run first
    # the check finds such a run: a held-out prompt's wording pasted into a document
    leaked = documents[:3] + [corpus.text_words(
        "We asked: would you put a befor and a lirot in the same group? Nobody knew.")]
    words = corpus.text_words("would you put a befor and a lirot in the same group")
    assert corpus.overlapping_runs(held, leaked) == sorted(
        " ".join(words[i:i + 6]) for i in range(len(words) - 5))  # all 7 windows
    # ... and a run of 5 is allowed
    assert corpus.overlapping_runs(held, [corpus.text_words("in the same group")]) == []


@pytest.mark.parametrize("text,expected", [
    ('Is a {{word1}} x?\n|||\n{{answer_choices[label]}}', [["is", "a", "<field>", "x"],
                                                           ["<field>"]]),
])
def test_template_segments(text, expected):
    assert corpus.template_segments(text) == expected
