"""The demo's generated task families: deterministic, labels follow the hidden rules, and the
project-authored templates are promptsource-format YAML that promptsource itself renders the
same way as our renderer, with the right answer-choice sets."""
import json

import pytest
import yaml

from t0_jax.data import synthetic, templates


def test_generation_is_deterministic_per_seed(tmp_path):
    a = synthetic.write_mirror(tmp_path / "a", seed=3, splits={"train": 50, "validation": 20})
    synthetic.write_mirror(tmp_path / "b", seed=3, splits={"train": 50, "validation": 20})
    synthetic.write_mirror(tmp_path / "c", seed=4, splits={"train": 50, "validation": 20})
    assert set(a) == set(synthetic.FAMILIES)
    for family in synthetic.FAMILIES:
        for split in ("train", "validation"):
            first = (tmp_path / "a" / family / f"{split}.jsonl").read_bytes()
            assert first == (tmp_path / "b" / family / f"{split}.jsonl").read_bytes()
            assert first != (tmp_path / "c" / family / f"{split}.jsonl").read_bytes()
    # the files hold exactly what generate_examples returns (ints stay ints: HF-like types)
    rows = [json.loads(line) for line in
            (tmp_path / "a" / "synth_compare" / "train.jsonl").read_text().splitlines()]
    assert rows == synthetic.generate_examples("synth_compare", "train", 50, seed=3)
    assert all(isinstance(r["number_a"], int) and isinstance(r["label"], int) for r in rows)


def _category(world, word):
    return world.nouns[word]


@pytest.mark.parametrize("family", sorted(synthetic.FAMILIES))
def test_labels_follow_the_hidden_rule(family):
    world = synthetic.make_world(seed=0)
    examples = synthetic.generate_examples(family, "validation", 200, seed=0)
    spec = synthetic.FAMILIES[family]
    counts = [sum(e["label"] == c for e in examples) for c in range(spec.num_classes)]
    assert counts == [200 // spec.num_classes] * spec.num_classes  # balanced
    assert [e["idx"] for e in examples] == list(range(200))
    for e in examples:
        label = e["label"]
        if family == "synth_polarity":
            words = [w.strip(".,!") for w in e["review"].split()]
            lexical = [world.polarity(w) for w in words if w in world.positive + world.negative]
            assert lexical and set(lexical) == {label}
        elif family == "synth_category":
            assert _category(world, e["word"]) == label
            assert synthetic.CATEGORIES[label] in ("animal", "fruit", "tool", "place")
        elif family == "synth_compare":
            assert e["number_a"] != e["number_b"]
            assert label == (0 if e["number_a"] > e["number_b"] else 1)
        elif family == "synth_rule":
            assert label == (0 if e["color"] == "red" or e["shape"] == "circle" else 1)
        elif family == "synth_completion":
            adjective = e["premise"].rstrip(".").split()[-1]
            assert world.polarity(adjective) == e["polarity"]
            right = (e["choice1"], e["choice2"])[label]
            happy = any(right == good for good, _ in synthetic._COMPLETION_ENDINGS)
            assert happy == bool(e["polarity"])
        elif family == "synth_same_kind":
            same = _category(world, e["word1"]) == _category(world, e["word2"])
            assert label == int(same) and e["word1"] != e["word2"]


def test_world_words_are_distinct_and_roles_disjoint():
    world = synthetic.make_world(seed=0)
    words = list(world.positive) + list(world.negative) + list(world.nouns)
    assert len(words) == len(set(words)) == 16 * 2 + 12 * 4
    assert sorted(set(world.nouns.values())) == [0, 1, 2, 3]


def _expected_choices(family, template, example):
    """The choice set a template must offer, in label order."""
    fixed = {"synth_category": list(synthetic.CATEGORIES), "synth_rule": list(synthetic.RULE_CLASSES)}
    if family == "synth_compare" and "{{number_a}}" in template.answer_choices:
        return [str(example["number_a"]), str(example["number_b"])]
    if family == "synth_completion" and "{{choice1}}" in template.answer_choices:
        return [example["choice1"], example["choice2"]]
    if family in fixed and template.answer_choices != "yes ||| no":
        return fixed[family]
    return None  # polar wording (yes/no, good/bad, ...): checked through the label below


@pytest.mark.parametrize("family", sorted(synthetic.FAMILIES))
def test_templates_render_with_correct_choices(family):
    spec = synthetic.FAMILIES[family]
    collection = templates.load_templates(family)
    assert 4 <= len(collection) <= 8
    names = {t.name for t in collection}
    assert set(spec.unseen_templates) <= names
    other = [t for t in collection if not t.original_task]
    if not spec.held_out:
        assert 1 <= len(spec.unseen_templates) < len(collection)
        # p = 1 ⊂ all original-task ⊊ all: >= 2 trained templates of another task (as in P3)
        assert len(other) >= 2 and not {t.name for t in other} & set(spec.unseen_templates)
    examples = synthetic.generate_examples(family, "validation", 40, seed=1)
    for template in collection:
        if not template.answer_choices:  # another task on the same data: a generation target
            assert not template.original_task and template.metrics == ("Other",)
            assert all(templates.render_example(template, e).targets for e in examples)
            continue
        assert template.metrics == ("Accuracy",)
        for example in examples:
            rendered = templates.render_example(template, example)
            assert rendered is not None and rendered.inputs
            choices = rendered.answer_choices
            assert len(choices) == spec.num_classes and len(set(choices)) == len(choices)
            expected = _expected_choices(family, template, example)
            if expected is not None:
                assert choices == expected, template.name
            # the target is the choice at the label (or at the polarity, for the two
            # sentiment-transfer prompts of the held-out completion family)
            index = example["polarity"] if "polarity]" in template.jinja else example["label"]
            assert rendered.targets == choices[index], (template.name, example)


def test_yaml_is_promptsource_format_and_renders_identically():
    """Our files load with promptsource 0.2.3's own YAML classes and its Template.apply agrees."""
    ps = pytest.importorskip("promptsource.templates")
    for family in synthetic.FAMILIES:
        path = templates.project_templates_dir() / family / "templates.yaml"
        with open(path) as f:
            document = yaml.load(f, Loader=yaml.FullLoader)  # promptsource's loader
        assert document["dataset"] == family and "subset" not in document
        theirs = {t.get_name(): t for t in document["templates"].values()}
        for key, template in document["templates"].items():
            assert isinstance(template, ps.Template) and template.get_id() == key
            assert isinstance(template.metadata, ps.Template.Metadata)
        for example in synthetic.generate_examples(family, "train", 5, seed=2):
            for ours in templates.load_templates(family):
                assert templates.render(ours, example) == theirs[ours.name].apply(example)
                assert (templates.answer_choices(ours, example)
                        == theirs[ours.name].get_answer_choices_list(example))


def test_vocabulary_covers_the_prompts(tmp_path):
    import sentencepiece as spm

    path = synthetic.train_vocabulary(tmp_path / "spiece.model", seed=0, vocab_size=800)
    sp = spm.SentencePieceProcessor(model_file=path)
    assert 200 < sp.get_piece_size() <= 800
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    world = synthetic.make_world(0)
    text = f"The soup was {world.positive[0]}. Is a {next(iter(world.nouns))} a glim or a vonk?"
    assert sp.unk_id() not in sp.encode(text)
    assert sp.decode(sp.encode(text)) == text


def _registered(spm_model_path):
    from t0_jax.data import registry

    previous = registry.task_vocabulary().path
    try:
        return synthetic.register(spm_model_path)
    finally:
        registry.set_vocab_path(previous)


def _trained(keep):
    """Task names of the trained (not unseen) templates of the trained families that `keep`."""
    from t0_jax.data import registry

    return {registry.task_name(f, None, t.name) for f in synthetic.trained_families()
            for t in templates.load_templates(f)
            if t.name not in synthetic.FAMILIES[f].unseen_templates and keep(f, t)}


def test_registration_builds_the_demo_mixtures(spm_model_path):
    from t0_jax.data import mixtures, registry

    out = _registered(spm_model_path)
    train = out[synthetic.TRAIN_MIXTURE]
    seen = _trained(lambda f, t: True)
    assert set(train) == seen and len(seen) == 24
    assert set(train.values()) == {mixtures.capped_rate(synthetic.SPLITS["train"], 8)}
    assert mixtures.mixture_rates(synthetic.TRAIN_MIXTURE) == dict(sorted(train.items()))
    all_twins = {registry.task_name(f, None, t.name) + "_score_eval"
                 for f in synthetic.FAMILIES for t in templates.load_templates(f)
                 if t.answer_choices}
    assert set(out[synthetic.EVAL_MIXTURE]) == all_twins
    kinds = synthetic.task_kinds()
    for kind, name in synthetic.KIND_MIXTURES.items():
        assert {kinds[t][1] for t in out[name]} == {kind}
    assert _registered(spm_model_path) == out  # idempotent


def test_ablation_mixtures_hold_exactly_the_intended_templates(spm_model_path):
    """p = 1: one original-task template per family (the first by name); all-original: every
    original-task template; all: every trained template; d: the configured families. Unseen
    templates and held-out families are in none; rates are T0's cap (all 8 templates counted)."""
    from t0_jax.data import catalogue, mixtures

    out = _registered(spm_model_path)
    one = out[synthetic.PROMPT_MIXTURES["one_og"]]
    all_og = out[synthetic.PROMPT_MIXTURES["all_og"]]
    every = out[synthetic.PROMPT_MIXTURES["all"]]
    first = {f: min(t.name for t in templates.load_templates(f) if t.original_task
                    and t.name not in synthetic.FAMILIES[f].unseen_templates)
             for f in synthetic.trained_families()}
    assert set(one) == _trained(lambda f, t: t.name == first[f]) and len(one) == 4
    assert set(all_og) == _trained(lambda f, t: t.original_task) and len(all_og) == 16
    assert set(every) == _trained(lambda f, t: True) and len(every) == 24
    assert set(one) < set(all_og) < set(every)
    unseen = synthetic.unseen_tasks()
    assert len(unseen) == 8 and not unseen & set(every)
    cap = mixtures.capped_rate(synthetic.SPLITS["train"], 8)
    for rates in (one, all_og, every):
        assert set(rates.values()) == {cap}
    d2 = synthetic.register_family_mixture("test_synth_d2", ["synth_polarity", "synth_rule"])
    assert set(d2) == _trained(lambda f, t: f in ("synth_polarity", "synth_rule"))
    assert mixtures.mixture_rates("test_synth_d2") == dict(sorted(d2.items()))
    with pytest.raises(ValueError, match="held-out family"):
        synthetic.register_family_mixture("test_synth_bad", ["synth_same_kind"])
    # the T0 mixtures come from the same selection code
    base = [e.key for e in catalogue.train_datasets("BASE")]
    for name, prompts in (("t0_train_one_og_prompt", "one_og"),
                          ("t0_train_all_og_prompts", "all_og"), ("t0_train", "all")):
        assert mixtures.mixture_rates(name) == dict(sorted(
            mixtures.prompt_selection_rates(base, prompts).items()))
