"""promptsource-format prompt templates: loading (fast, cached, no promptsource import) and
rendering that is string-for-string identical to promptsource 0.2.3's `Template.apply`.

Where templates come from
    The installed `promptsource` package's `templates/<dataset>[/<subset>]/templates.yaml`
    (found with importlib, never imported: its module needs `pkg_resources`) and the project's own
    `tasks/templates/` tree in the same format. Folders of the users promptsource names
    (`Zaid`, `craffel`) hold datasets called `<user>/<name>`, as promptsource does.

Why we parse the YAML ourselves
    promptsource reads each file with PyYAML's pure-Python FullLoader (~3 s for all 2,085
    templates). The C SafeLoader with constructors for the two tags reads them in ~0.2 s, and
    files are read only when a (dataset, subset) is first asked for, then cached.

Rendering (`render`, `answer_choices`, `fixed_answer_choices`) follows promptsource's
`apply` / `get_answer_choices_list` / `get_fixed_answer_choices_list` exactly (see
`jinja_env`), with two additions: the `choice` filter draws from a generator seeded by
`choice_seed(seed, example)` instead of the global `random`, and an example that lacks a field
the template refers to raises `MissingFieldError` instead of rendering an empty string.
`render_example` builds a P3 example (de-hyphenated field names, `<NO LABEL>`, drops).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import pathlib
import random
from typing import Optional

import jinja2
import yaml

from t0_jax import resources
from t0_jax.data import jinja_env

TEMPLATE_FILENAME = "templates.yaml"
# promptsource.templates.INCLUDED_USERS: their folders hold `<user>/<dataset>` collections.
USER_NAMESPACES = frozenset({"Zaid", "craffel"})
NO_LABEL = "<NO LABEL>"


class TemplateError(ValueError):
    """A template file or template that cannot be used (names the file and template)."""


class TemplateNotFoundError(TemplateError, LookupError):
    """No templates, or no template of that name, for a (dataset, subset)."""


class MissingFieldError(TemplateError, KeyError):
    """An example lacks a field its template refers to (names template, dataset and field)."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt template, as read from a promptsource-format YAML file."""

    id: str
    name: str
    jinja: str
    answer_choices: Optional[str]
    reference: Optional[str]
    original_task: Optional[bool]
    choices_in_prompt: Optional[bool]
    metrics: tuple
    dataset: str
    subset: Optional[str]
    source_file: str

    @property
    def collection(self) -> str:
        """`dataset` or `dataset/subset`, for messages."""
        return f"{self.dataset}/{self.subset}" if self.subset else self.dataset

    def describe(self) -> str:
        return f"template '{self.name}' of dataset '{self.collection}' ({self.source_file})"


@dataclasses.dataclass(frozen=True)
class RenderedExample:
    """One P3 example: prompt, target and (for ranked tasks) the answer choices."""

    inputs: str
    targets: str
    answer_choices: Optional[list]


# ----------------------------------------------------------------------------- locating files


def promptsource_templates_dir() -> Optional[pathlib.Path]:
    """`<site-packages>/promptsource/templates`, located without importing promptsource."""
    spec = importlib.util.find_spec("promptsource")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / "templates"
        if candidate.is_dir():
            return candidate
    return None


def project_templates_dir() -> Optional[pathlib.Path]:
    """The project's own `tasks/templates/` (None when the resource folder is absent)."""
    try:
        candidate = resources.tasks_dir() / "templates"
    except FileNotFoundError:
        return None
    return candidate if candidate.is_dir() else None


def template_roots() -> list:
    """Folders searched for templates, promptsource's first."""
    return [root for root in (promptsource_templates_dir(), project_templates_dir()) if root]


def _collection_key(root: pathlib.Path, yaml_path: pathlib.Path):
    parts = yaml_path.parent.relative_to(root).parts
    if parts and parts[0] in USER_NAMESPACES:
        parts = (parts[0] + "/" + parts[1],) + parts[2:] if len(parts) > 1 else parts
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2:
        return parts[0], parts[1]
    return None  # deeper folders are not promptsource collections


@functools.lru_cache(maxsize=None)
def _collection_files() -> dict:
    """{(dataset, subset): [yaml paths]} over every root; listing only, nothing parsed."""
    found: dict = {}
    for root in template_roots():
        for yaml_path in sorted(root.rglob(TEMPLATE_FILENAME)):
            key = _collection_key(root, yaml_path)
            if key is not None:
                found.setdefault(key, []).append(yaml_path)
    return found


def list_template_collections() -> list:
    """Every (dataset, subset) that has templates, sorted (subset None sorts first)."""
    return sorted(_collection_files(), key=lambda key: (key[0], key[1] or ""))


def clear_caches() -> None:
    """Forget listed and parsed files (after templates were added on disk, e.g. in tests)."""
    _collection_files.cache_clear()
    _load_collection.cache_clear()
    _parse_file.cache_clear()


# ----------------------------------------------------------------------------- parsing


class _TemplateLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):
    """Safe YAML loader that reads `!Template` / `!TemplateMetadata` nodes as plain mappings."""


def _construct_tagged_mapping(loader, node):
    return loader.construct_mapping(node, deep=True)


_TemplateLoader.add_constructor("!Template", _construct_tagged_mapping)
_TemplateLoader.add_constructor("!TemplateMetadata", _construct_tagged_mapping)


def _read_document(path: pathlib.Path) -> dict:
    """One YAML file as a mapping with a `templates:` mapping (TemplateError when malformed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=_TemplateLoader)
    except yaml.YAMLError as error:
        raise TemplateError(f"template file {path} is not valid YAML: {error}. Fix the file "
                            "(promptsource format: `dataset`, `templates: {uuid: !Template "
                            "{...}}`).") from error
    if not isinstance(document, dict) or not isinstance(document.get("templates"), dict):
        raise TemplateError(f"template file {path} has no `templates:` mapping; expected "
                            "promptsource format (`dataset`, optional `subset`, `templates`).")
    return document


@functools.lru_cache(maxsize=None)
def _parse_file(path: pathlib.Path) -> tuple:
    """The raw (key, template mapping) pairs of one YAML file, parsed once."""
    return tuple(_read_document(path)["templates"].items())


def _template_from_mapping(key, raw, dataset, subset, path) -> Template:
    where = f"template '{key}' in {path}"
    if not isinstance(raw, dict):
        raise TemplateError(f"{where} is not a `!Template` mapping.")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise TemplateError(f"{where} has no `name`; give every template a unique name.")
    where = f"template '{name}' (id {key}) in {path}"
    if not isinstance(raw.get("jinja"), str):
        raise TemplateError(f"{where} has no `jinja` string; add the prompt as `jinja: ...`.")
    choices = raw.get("answer_choices")
    if choices is not None and not isinstance(choices, str):
        raise TemplateError(f"{where}: `answer_choices` must be a jinja string or null, "
                            f"got {type(choices).__name__}.")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TemplateError(f"{where}: `metadata` must be a `!TemplateMetadata` mapping.")
    return Template(
        id=str(raw.get("id", key)), name=name, jinja=raw["jinja"], answer_choices=choices,
        reference=raw.get("reference"), original_task=metadata.get("original_task"),
        choices_in_prompt=metadata.get("choices_in_prompt"),
        metrics=tuple(metadata.get("metrics") or ()), dataset=dataset, subset=subset,
        source_file=str(path))


@functools.lru_cache(maxsize=None)
def _load_collection(dataset: str, subset: Optional[str]) -> tuple:
    paths = _collection_files().get((dataset, subset))
    if not paths:
        raise TemplateNotFoundError(_not_found_message(dataset, subset))
    by_name: dict = {}
    for path in paths:
        for key, raw in _parse_file(path):
            template = _template_from_mapping(key, raw, dataset, subset, path)
            if template.name in by_name:
                raise TemplateError(
                    f"template name '{template.name}' appears twice for dataset "
                    f"'{template.collection}' ({by_name[template.name].source_file} and {path}); "
                    "template names must be unique per dataset: rename one.")
            by_name[template.name] = template
    return tuple(by_name[name] for name in sorted(by_name))


def _not_found_message(dataset, subset) -> str:
    wanted = f"dataset '{dataset}'" + (f" subset '{subset}'" if subset else " (no subset)")
    subsets = sorted(str(s) for d, s in _collection_files() if d == dataset)
    hint = (f" Known subsets of '{dataset}': {', '.join(subsets)}." if subsets else
            " Add a `templates.yaml` under tasks/templates/<dataset>[/<subset>]/.")
    roots = ", ".join(str(root) for root in template_roots()) or "(no template folders found)"
    return f"no templates for {wanted} in {roots}.{hint}"


def load_template_file(path) -> list:
    """The templates of one YAML file (dataset and subset from its own keys), sorted by name.

    For checking a template file before putting it under `tasks/templates/`.
    """
    path = pathlib.Path(path)
    document = _read_document(path)
    dataset, subset = str(document.get("dataset")), document.get("subset")
    templates = [_template_from_mapping(key, raw, dataset, subset, path)
                 for key, raw in document["templates"].items()]
    return sorted(templates, key=lambda template: template.name)


def load_templates(dataset: str, subset: Optional[str] = None) -> list:
    """All templates of (dataset, subset), sorted by name; files are parsed once and cached."""
    return list(_load_collection(dataset, subset or None))


def template_names(dataset: str, subset: Optional[str] = None) -> list:
    return [template.name for template in _load_collection(dataset, subset or None)]


def count_templates(dataset: str, subset: Optional[str] = None) -> int:
    """How many templates (dataset, subset) has (the denominator of the mixture cap)."""
    return len(_load_collection(dataset, subset or None))


def get_template(dataset: str, subset: Optional[str], name: str) -> Template:
    for template in _load_collection(dataset, subset or None):
        if template.name == name:
            return template
    known = ", ".join(template_names(dataset, subset))
    raise TemplateNotFoundError(f"no template named '{name}' for dataset '{dataset}'"
                                f"{'/' + subset if subset else ''}; its templates are: {known}.")


# ----------------------------------------------------------------------------- rendering


def choice_seed(seed: int, example: dict) -> int:
    """Seed of the `choice` filter's generator for one example: stable across runs and hosts."""
    payload = json.dumps(example, sort_keys=True, default=str, ensure_ascii=False)
    digest = hashlib.sha256(f"{int(seed)}\x00{payload}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _compiled(template: Template, source: str, what: str) -> jinja_env.CompiledSource:
    try:
        return jinja_env.compile_source(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"{what} of {template.describe()} is not valid jinja "
                            f"(line {error.lineno}: {error.message}); fix the template.") from error


def _check_fields(template: Template, compiled, what: str, example: dict) -> None:
    """Raise MissingFieldError when `example` lacks a field that the source reads.

    promptsource renders a missing field as an empty string; a valid example has every field
    its dataset defines, so refusing here only changes the outcome for broken input.
    """
    missing = sorted(name for name in compiled.names
                     if name not in example and name != "answer_choices")
    if missing:
        fields = ", ".join(sorted(map(str, example))) or "(none)"
        raise MissingFieldError(
            f"example has no field '{missing[0]}' used by the {what} of {template.describe()}"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; the example's fields are: {fields}. Check that the data matches the Hugging "
            f"Face dataset '{template.collection}' the template was written for.")


def _compiled_parts(template: Template):
    """(prompt, answer choices or None), compiled; the prompt with promptsource's truncation."""
    prompt = _compiled(template, jinja_env.truncating(template.jinja), "jinja")
    choices = (None if template.answer_choices is None else
               _compiled(template, template.answer_choices, "answer_choices"))
    return prompt, choices


def _choice_rng(prompt, choices, example: dict, seed: int) -> Optional[random.Random]:
    if not (prompt.uses_choice or (choices is not None and choices.uses_choice)):
        return None
    return random.Random(choice_seed(seed, example))


def _render_choices(template, compiled, example, rng) -> Optional[list]:
    if compiled is None:
        return None
    _check_fields(template, compiled, "answer_choices", example)
    protected = jinja_env.escape_pipes(example)
    protected[jinja_env.RNG_KEY] = rng
    rendered = _run(template, compiled, "answer_choices", protected)
    return [jinja_env.unescape_pipes(part.strip()) for part in rendered.split(jinja_env.SEPARATOR)]


def _run(template: Template, compiled, what: str, variables: dict) -> str:
    """Render; a jinja error at run time (a filter or operator applied to a value of the wrong
    type, a missing attribute) names the template instead of surfacing from jinja's inside."""
    try:
        return compiled.template.render(**variables)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, LookupError,
            ArithmeticError) as error:
        raise TemplateError(f"the {what} of {template.describe()} failed on an example "
                            f"({type(error).__name__}: {error}); fix the template, or the "
                            "example's field types.") from error


def answer_choices(template: Template, example: dict, seed: int = 0) -> Optional[list]:
    """promptsource `get_answer_choices_list(example)`: the rendered choices, or None."""
    prompt, choices = _compiled_parts(template)
    return _render_choices(template, choices, example, _choice_rng(prompt, choices, example, seed))


def fixed_answer_choices(template: Template) -> Optional[list]:
    """promptsource `get_fixed_answer_choices_list()`: choices that need no example, else None."""
    if template.answer_choices is None:
        return None
    compiled = _compiled(template, template.answer_choices, "answer_choices")
    if compiled.names:
        return None
    rendered = compiled.template.render()
    return [part.strip() for part in rendered.split(jinja_env.SEPARATOR)]


def render(template: Template, example: dict, seed: int = 0) -> list:
    """promptsource `Template.apply(example)`: the rendered parts split on `|||`, stripped."""
    parts, _ = _render_with_choices(template, example, seed)
    return parts


def _render_with_choices(template: Template, example: dict, seed: int):
    if "answer_choices" in example:
        raise TemplateError(f"example for {template.describe()} has a field named "
                            "'answer_choices', which templates reserve; rename the field.")
    prompt, choices_source = _compiled_parts(template)
    _check_fields(template, prompt, "jinja", example)
    rng = _choice_rng(prompt, choices_source, example, seed)
    choices = _render_choices(template, choices_source, example, rng)  # drawn first, as promptsource
    protected = jinja_env.escape_pipes(example)
    protected["answer_choices"] = choices
    protected[jinja_env.RNG_KEY] = rng
    rendered = _run(template, prompt, "jinja", protected)
    parts = [jinja_env.unescape_pipes(part).strip() for part in rendered.split(jinja_env.SEPARATOR)]
    return parts, choices


def dehyphenate(example: dict) -> dict:
    """promptsource `utils.removeHyphen`: P3 renamed fields like `question-id` to `question_id`."""
    return {key.replace("-", "_") if isinstance(key, str) else key: value
            for key, value in example.items()}


def render_example(template: Template, example: dict, seed: int = 0) -> Optional[RenderedExample]:
    """One P3 example, or None when P3 would drop it.

    As in the T0 seqio tasks: fields are de-hyphenated, a rendering that does not split into
    exactly (inputs, targets) is dropped, an empty target becomes `<NO LABEL>`, and an empty
    prompt is dropped (P3's filter kept only non-empty inputs and targets). The answer choices
    returned are the very list the prompt was rendered with. Callers count the Nones.
    """
    clean = dehyphenate(example)
    parts, choices = _render_with_choices(template, clean, seed)
    if len(parts) != 2 or not parts[0]:
        return None
    inputs, targets = parts
    return RenderedExample(inputs=inputs, targets=targets or NO_LABEL, answer_choices=choices)
