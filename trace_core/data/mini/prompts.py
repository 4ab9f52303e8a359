"""Our own wording of the M-BEIR-mini query instructions: four prompts per (dataset, task) key."""

from __future__ import annotations

from trace_core.data.mbeir import DATASETS, TEST_TASKS

HEADER = (
    "query_modality",
    "cand_modality",
    "dataset_name",
    "dataset_id",
    "prompt_1",
    "prompt_2",
    "prompt_3",
    "prompt_4",
)

# Flavour noun per dataset id, substituted into the task templates below.
NOUNS: dict[int, str] = {
    0: "news",
    1: "fashion",
    2: "wiki",
    3: "news",
    4: "scene",
    5: "encyclopedia",
    6: "encyclopedia",
    7: "fashion",
    8: "scene",
    9: "everyday",
}
TEMPLATES: dict[int, tuple[str, str, str, str]] = {
    0: (
        "Find the {noun} image that matches this description:",
        "Retrieve the {noun} picture described here:",
        "Which {noun} image fits this text?",
        "Show me the {noun} photo for:",
    ),
    1: (
        "Find the {noun} passage that answers this question:",
        "Retrieve the {noun} text relevant to:",
        "Which {noun} passage answers the question?",
        "Look up the {noun} article that responds to:",
    ),
    2: (
        "Find the {noun} image and text that match:",
        "Retrieve the illustrated {noun} entry for:",
        "Which {noun} picture with its text fits:",
        "Show the {noun} image-text pair for:",
    ),
    3: (
        "Find the {noun} caption of this image.",
        "Retrieve the {noun} text that describes this picture.",
        "Which {noun} description matches the image?",
        "Give the {noun} caption for this photo.",
    ),
    4: (
        "Find a {noun} image that looks nearly the same as this one.",
        "Retrieve the closest {noun} variation of this picture.",
        "Which {noun} image is a near-duplicate of this one?",
        "Show a {noun} picture almost identical to this one.",
    ),
    6: (
        "Use the image to find the {noun} passage that answers:",
        "Identify what the picture shows and retrieve the {noun} text for:",
        "Which {noun} passage about the pictured entity answers:",
        "Look at the image and find the {noun} article answering:",
    ),
    7: (
        "Find the {noun} image that looks like this one but:",
        "Apply the change to the {noun} picture and retrieve the result:",
        "Which {noun} image matches the picture after this edit:",
        "Retrieve the {noun} photo that is like the image except it:",
    ),
    8: (
        "Use the image to find the illustrated {noun} entry that answers:",
        "Identify the pictured entity and retrieve its {noun} image and text for:",
        "Which illustrated {noun} passage about the pictured entity answers:",
        "Look at the image and find the {noun} image-text entry answering:",
    ),
}


def instruction_rows() -> list[tuple[str, ...]]:
    """One TSV row per test-task key, in the standard table order."""
    rows = []
    for task in TEST_TASKS:
        qmod, cmod = task.modalities
        prompts = tuple(t.format(noun=NOUNS[task.dataset_id]) for t in TEMPLATES[task.task_id])
        rows.append((qmod, cmod, DATASETS[task.dataset_id], str(task.dataset_id), *prompts))
    return rows


def instructions_tsv() -> str:
    """The complete ``query_instructions.tsv`` text (header + 16 rows, tab separated)."""
    return "".join("\t".join(r) + "\n" for r in [HEADER, *instruction_rows()])
