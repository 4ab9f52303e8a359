"""Each zero-shot loader on literal records in its dataset's real format, and its located errors."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from trace_core.evaluation.zeroshot import (
    ccneg,
    circo,
    flickr30k,
    genecis,
    mtfashioniq,
    sharegpt4v,
    sugar_crepe,
    urban1k,
    visdial,
    vist,
)
from trace_core.evaluation.zeroshot.base import LoadContext, line_of
from trace_core.evaluation.zeroshot.suite import COLUMNS, column_values, load_suite
from trace_core.io import DataError


@pytest.fixture()
def ctx(tmp_path: Path) -> LoadContext:
    return LoadContext(tmp_path / "zeroshot", tmp_path / "crops")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _image(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


# --- ShareGPT4V ---------------------------------------------------------------------------------------
SHAREGPT4V = """[
  {
    "id": "000000000009",
    "image": "coco/train2017/000000000009.jpg",
    "conversations": [
      {"from": "human", "value": "<image>\\nWhat do you see happening in this image?"},
      {"from": "gpt", "value": "The image showcases a meal served in a blue tray with compartments."}
    ]
  },
  {
    "id": "sa_1545",
    "image": "sam/images/sa_1545.jpg",
    "conversations": [
      {"from": "human", "value": "<image>\\nCan you describe the main features of this image for me?"},
      {"from": "gpt", "value": "In the image, a group of people are gathered on a cobblestone street."}
    ]
  }
]
"""


def test_sharegpt4v(ctx: LoadContext) -> None:
    _write(ctx.root / "sharegpt4v" / "sharegpt4v_instruct_gpt4-vision_cap100k.json", SHAREGPT4V)
    t2i, i2t = sharegpt4v.load(ctx)
    assert (t2i.name, i2t.name, t2i.metric) == ("sharegpt4v_t2i", "sharegpt4v_i2t", "recall")
    assert [c.img_path for c in t2i.candidates] == [
        "sharegpt4v/coco/train2017/000000000009.jpg",
        "sharegpt4v/sam/images/sa_1545.jpg",
    ]
    q = t2i.queries[0]
    assert q.item.text.startswith(sharegpt4v.T2I) and "blue tray with compartments" in q.item.text
    assert q.positives == {t2i.candidates[0].id}
    assert i2t.queries[1].item.img_path == "sharegpt4v/sam/images/sa_1545.jpg"
    assert i2t.queries[1].positives == {i2t.candidates[1].id}
    assert i2t.candidates[1].text.startswith("In the image, a group of people")


def test_sharegpt4v_missing_caption_names_line(ctx: LoadContext) -> None:
    bad = SHAREGPT4V.replace('{"from": "gpt", "value": "In the image', '{"from": "human", "value": "In the image')
    _write(ctx.root / "sharegpt4v" / "sharegpt4v_instruct_gpt4-vision_cap100k.json", bad)
    with pytest.raises(DataError, match=r"cap100k.json:line 10 \(record 1\): conversations hold no 'gpt' turn"):
        sharegpt4v.load(ctx)


# --- Urban-1K -------------------------------------------------------------------------------------------
URBAN_CAPTION = (
    "The image captures a bustling city street at dusk. On the left side, a red double-decker bus is parked "
    "next to a sidewalk lined with shops.\n"
)


def test_urban1k(ctx: LoadContext) -> None:
    folder = ctx.root / "urban1k"
    for n in (10, 2):
        _write(folder / "caption" / f"{n}.txt", URBAN_CAPTION.replace("red", f"red{n}"))
        _image(folder / "image" / f"{n}.jpg")
    t2i, i2t = urban1k.load(ctx)
    assert [q.qid for q in t2i.queries] == ["urban1k:txt2", "urban1k:txt10"]  # numeric order
    assert [c.img_path for c in t2i.candidates] == ["urban1k/image/2.jpg", "urban1k/image/10.jpg"]
    assert i2t.candidates[0].text == URBAN_CAPTION.strip().replace("red", "red2")


def test_urban1k_errors(ctx: LoadContext) -> None:
    folder = ctx.root / "urban1k"
    _write(folder / "caption" / "1.txt", URBAN_CAPTION)
    (folder / "image").mkdir(parents=True)
    with pytest.raises(DataError, match=r"1.txt:file: no image image/1.jpg for this caption"):
        urban1k.load(ctx)
    _image(folder / "image" / "1.jpg")
    _write(folder / "caption" / "1.txt", "\n")
    with pytest.raises(DataError, match=r"1.txt:line 1: the caption \(first line\) is empty"):
        urban1k.load(ctx)


# --- Flickr30K (Karpathy split) ---------------------------------------------------------------------
FLICKR = {
    "images": [
        {
            "sentids": [0, 1],
            "imgid": 0,
            "sentences": [
                {
                    "tokens": ["two", "young", "guys", "with", "shaggy", "hair"],
                    "raw": "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
                    "imgid": 0,
                    "sentid": 0,
                },
                {
                    "tokens": ["two", "young"],
                    "raw": "Two young, White males are outside near many bushes.",
                    "imgid": 0,
                    "sentid": 1,
                },
            ],
            "split": "train",
            "filename": "1000092795.jpg",
        },
        {
            "sentids": [5, 6, 7, 8, 9],
            "imgid": 1,
            "sentences": [
                {
                    "tokens": ["a"],
                    "raw": "A child in a pink dress is climbing up a set of stairs in an entry way.",
                    "imgid": 1,
                    "sentid": 5,
                },
                {"tokens": ["a"], "raw": "A girl going into a wooden building.", "imgid": 1, "sentid": 6},
                {"tokens": ["a"], "raw": "A little girl climbing into a wooden playhouse.", "imgid": 1, "sentid": 7},
                {
                    "tokens": ["a"],
                    "raw": "A little girl climbing the stairs to her playhouse.",
                    "imgid": 1,
                    "sentid": 8,
                },
                {
                    "tokens": ["a"],
                    "raw": "A little girl in a pink dress going into a wooden cabin.",
                    "imgid": 1,
                    "sentid": 9,
                },
            ],
            "split": "test",
            "filename": "1000268201.jpg",
        },
    ],
    "dataset": "flickr30k",
}


def test_flickr30k_test_split_five_captions(ctx: LoadContext) -> None:
    _write(ctx.root / "flickr30k" / "dataset_flickr30k.json", json.dumps(FLICKR, indent=2))
    t2i, i2t = flickr30k.load(ctx)
    assert [c.img_path for c in t2i.candidates] == ["flickr30k/flickr30k-images/1000268201.jpg"]  # train image left out
    assert len(t2i.queries) == 5 and len(i2t.queries) == 1
    assert i2t.queries[0].positives == {f"flickr30k:txt{i}" for i in range(5, 10)}
    assert t2i.queries[3].item.text.endswith("A little girl climbing the stairs to her playhouse.")


def test_flickr30k_bad_sentence_names_line(ctx: LoadContext) -> None:
    bad = json.loads(json.dumps(FLICKR))
    del bad["images"][1]["sentences"][2]["raw"]
    path = _write(ctx.root / "flickr30k" / "dataset_flickr30k.json", json.dumps(bad, indent=2))
    line = line_of(path, ["images", 1, "sentences", 2])
    assert line is not None and '"tokens"' in path.read_text().splitlines()[line]
    with pytest.raises(DataError, match=rf"line {line} \(record images/1/sentences/2\): missing field 'raw'"):
        flickr30k.load(ctx)


# --- CIRCO ---------------------------------------------------------------------------------------------------
CIRCO_VAL = """[
    {
        "reference_img_id": 85932,
        "target_img_id": 9761,
        "relative_caption": "is held by a little girl on a chair",
        "shared_concept": "a teddy bear",
        "gt_img_ids": [
            9761,
            489535,
            57541,
            375057,
            119881
        ],
        "id": 0
    }
]
"""
CIRCO_IDS = [85932, 9761, 489535, 57541, 375057, 119881, 243611]


def _circo_info(ids: list[int]) -> str:
    images = [
        {
            "license": 4,
            "file_name": f"{i:012d}.jpg",
            "coco_url": "",
            "height": 480,
            "width": 640,
            "date_captured": "",
            "id": i,
        }
        for i in ids
    ]
    return json.dumps({"info": {"description": "COCO 2017 Dataset"}, "licenses": [], "images": images})


def test_circo(ctx: LoadContext) -> None:
    folder = ctx.root / "circo"
    _write(folder / "annotations" / "val.json", CIRCO_VAL)
    _write(folder / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", _circo_info(CIRCO_IDS))
    (task,) = circo.load(ctx)
    assert (task.metric, task.ks[0]) == ("map", 5)
    assert len(task.candidates) == len(CIRCO_IDS)
    q = task.queries[0]
    assert q.qid == "circo:q0" and q.positives == {f"circo:{i}" for i in (9761, 489535, 57541, 375057, 119881)}
    assert q.item.img_path == "circo/COCO2017_unlabeled/unlabeled2017/000000085932.jpg"
    assert q.item.text == f"{circo.INSTRUCTION} is held by a little girl on a chair."


def test_circo_unknown_image_and_malformed_json(ctx: LoadContext) -> None:
    folder = ctx.root / "circo"
    _write(folder / "annotations" / "val.json", CIRCO_VAL)
    _write(folder / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", _circo_info(CIRCO_IDS[:-3]))
    with pytest.raises(DataError, match=r"val.json:line 2 \(record 0\): image ids \[375057, 119881\] are not in"):
        circo.load(ctx)
    _write(folder / "annotations" / "val.json", CIRCO_VAL.replace('"id": 0', '"id": 0,'))
    _write(folder / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", _circo_info(CIRCO_IDS))
    with pytest.raises(DataError, match=r"val.json:line 15: malformed JSON"):
        circo.load(ctx)


# --- GeneCIS -------------------------------------------------------------------------------------------------
GENECIS_OBJECT = [
    {
        "reference": {"val_image_id": 139},
        "target": {"val_image_id": 632},
        "condition": "bed",
        "gallery": [{"val_image_id": 724}, {"val_image_id": 776}, {"val_image_id": 785}],
    }
]
GENECIS_ATTRIBUTE = [
    {
        "reference": {"image_id": 2375429, "instance_bbox": [4.0, 6.0, 20.0, 10.0], "object_name": "shirt"},
        "target": {"image_id": 2356244, "instance_bbox": [10.0, 10.0, 8.0, 16.0], "object_name": "shirt"},
        "condition": "color",
        "gallery": [{"image_id": 2401999, "instance_bbox": [0.0, 0.0, 12.0, 12.0], "object_name": "shirt"}],
    }
]


def test_genecis_object_and_attribute_subsets(ctx: LoadContext) -> None:
    folder = ctx.root / "genecis"
    _write(folder / "annotations" / "change_object.json", json.dumps(GENECIS_OBJECT, indent=4))
    _write(folder / "annotations" / "focus_attribute.json", json.dumps(GENECIS_ATTRIBUTE, indent=4))
    for image_id in (2375429, 2356244, 2401999):
        _image(folder / "vg" / "VG_100K" / f"{image_id}.jpg", (64, 48))
    change_object, focus_attribute = genecis.load(ctx)  # the two present subsets, in suite order
    q = change_object.queries[0]
    assert change_object.name == "genecis_change_object" and change_object.ks == (1, 2, 3)
    assert q.item.img_path == "genecis/coco/val2017/000000000139.jpg"
    assert q.item.text == f"{genecis.INSTRUCTIONS['change_object']} bed."
    assert q.gallery == ("genecis:coco632", "genecis:coco724", "genecis:coco776", "genecis:coco785")
    assert q.positives == {"genecis:coco632"}
    fa = focus_attribute.queries[0]
    assert focus_attribute.crops and not change_object.crops  # VG subsets: paths relative to the crop folder
    crop = ctx.crop_dir / fa.item.img_path
    assert fa.item.img_path.startswith("genecis/") and crop.is_file()
    with Image.open(crop) as im:  # [4, 6, 20, 10] grown by 0.7 from its top-left: 34 x 17, padded square
        assert im.size == (34, 34)
    assert fa.gallery == ("genecis:vg2356244_10_10_8_16", "genecis:vg2401999_0_0_12_12")


def test_genecis_crop_geometry() -> None:
    assert genecis.crop_box((100, 100), (10.0, 20.0, 20.0, 10.0)) == (0, 13, 34, 30)
    assert genecis.crop_box((30, 30), (20.0, 20.0, 20.0, 20.0)) == (6, 6, 30, 30)  # clipped to the image


def test_genecis_errors(ctx: LoadContext) -> None:
    folder = ctx.root / "genecis" / "annotations"
    folder.mkdir(parents=True)
    with pytest.raises(DataError, match="no GeneCIS template file"):
        genecis.load(ctx)
    bad = json.loads(json.dumps(GENECIS_ATTRIBUTE))
    bad[0]["gallery"][0]["instance_bbox"] = [0.0, 0.0, 12.0]
    _write(folder / "change_attribute.json", json.dumps(bad, indent=4))
    with pytest.raises(DataError, match=r"missing Visual Genome image"):
        genecis.load(ctx)
    for image_id in (2375429, 2356244):
        _image(ctx.root / "genecis" / "vg" / "VG_100K" / f"{image_id}.jpg")
    with pytest.raises(DataError, match=r"\(record 0/gallery/0\): instance_bbox must be four numbers"):
        genecis.load(ctx)


# --- Visual Dialog ----------------------------------------------------------------------------------------------
VISDIAL = {
    "version": "1.0",
    "split": "val2018",
    "data": {
        "questions": ["is the photo in color", "how many people are there", "is it sunny"],
        "answers": ["yes", "2", "no, it looks cloudy"],
        "dialogs": [
            {
                "image_id": 185565,
                "caption": "a man and a woman standing next to a motorcycle",
                "dialog": [
                    {"answer": 0, "question": 0, "answer_options": [0, 1, 2], "gt_index": 0},
                    {"answer": 1, "question": 1, "answer_options": [2, 1, 0], "gt_index": 1},
                    {"answer": 2, "question": 2, "answer_options": [1, 2, 0], "gt_index": 1},
                ],
            },
            {
                "image_id": 284024,
                "caption": "a kitchen with a stove",
                "dialog": [{"answer": 0, "question": 0, "answer_options": [0, 1, 2], "gt_index": 0}],
            },
        ],
    },
}


def test_visdial(ctx: LoadContext) -> None:
    _write(ctx.root / "visdial" / "visdial_1.0_val.json", json.dumps(VISDIAL))
    (task,) = visdial.load(ctx)
    q = task.queries[0]
    assert q.item.text == (
        f"{visdial.INSTRUCTION} Q: is the photo in color? A: yes. Q: how many people are there? A: 2. "
        "Q: is it sunny? A: no, it looks cloudy."
    )
    assert "motorcycle" not in q.item.text  # the caption is not part of the query (LamRA's protocol)
    assert q.positives == {"visdial:185565"}
    assert task.candidates[1].img_path == "visdial/VisualDialog_val2018/VisualDialog_val2018_000000284024.jpg"


def test_visdial_bad_index(ctx: LoadContext) -> None:
    bad = json.loads(json.dumps(VISDIAL))
    bad["data"]["dialogs"][1]["dialog"][0]["question"] = 7
    _write(ctx.root / "visdial" / "visdial_1.0_val.json", json.dumps(bad, indent=2))
    with pytest.raises(DataError, match=r"\(record data/dialogs/1/dialog/0\): question index 7 is not an index"):
        visdial.load(ctx)


# --- VIST ----------------------------------------------------------------------------------------------------------
def _vist_ann(story: str, photo: str, order: int, text: str) -> list[dict]:
    return [
        {
            "original_text": text.capitalize(),
            "album_id": "72157605930515606",
            "photo_flickr_id": photo,
            "setting": "first-2-pick-and-tell",
            "worker_id": "P4DEEKC6DKZ09SY",
            "story_id": story,
            "tier": "story-in-sequence",
            "worker_arranged_photo_order": order,
            "text": text,
            "storylet_id": f"{story}{order}",
        }
    ]


VIST = {
    "images": [{"datetaken": "2008-06-30 07:33:43", "license": "5", "title": "DSCN2283", "id": "2627795780"}],
    "info": {},
    "albums": [],
    "type": "story-in-sequence",
    "annotations": [
        _vist_ann("45530", "2627795780", 0, "the family got together for a cookout ."),
        _vist_ann("45530", "2626977325", 2, "the kids played in the yard ."),
        _vist_ann("45530", "2626981323", 1, "they had a lot of delicious food ."),
        _vist_ann("45531", "2627795780", 0, "we went to the park ."),
        _vist_ann("45531", "2627001000", 1, "it was a great day ."),
    ],
}


def test_vist_interleaves_and_excludes_context(ctx: LoadContext) -> None:
    folder = ctx.root / "vist"
    _write(folder / "sis" / "val.story-in-sequence.json", json.dumps(VIST))
    for photo in ("2627795780", "2626977325", "2627001000"):
        _image(folder / "images" / "val" / f"{photo}.jpg")
    _image(folder / "images" / "val" / "2626981323.png")
    (task,) = vist.load(ctx)
    q = task.queries[0]
    assert q.item.segments == (
        ("text", f"{vist.INSTRUCTION}."),
        ("text", "the family got together for a cookout ."),
        ("image", "vist/images/val/2627795780.jpg"),
        ("text", "they had a lot of delicious food ."),  # worker order, not file order
        ("image", "vist/images/val/2626981323.png"),
        ("text", "the kids played in the yard ."),
    )
    assert q.positives == {"vist:2626977325"}
    assert q.exclude == {"vist:2627795780", "vist:2626981323"}
    assert [c.id for c in task.candidates] == [
        "vist:2627795780",
        "vist:2626981323",
        "vist:2626977325",
        "vist:2627001000",
    ]


def test_vist_missing_photo(ctx: LoadContext) -> None:
    _write(ctx.root / "vist" / "sis" / "val.story-in-sequence.json", json.dumps(VIST))
    (ctx.root / "vist" / "images" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=r"val:photo 2627795780: no image file 2627795780 with suffix .jpg, .png, .gif"):
        vist.load(ctx)


# --- multi-turn FashionIQ ---------------------------------------------------------------------------------
MTFIQ = (
    '[{"target": ["http://ecx.images-amazon.com/images/I/414TIJ6E-EL._SX342_.jpg", "B008VPNQCK"], '
    '"reference": [["http://ecx.images-amazon.com/images/I/41y6igcEvTL._SX342_.jpg", '
    '["has long sleeves", "has same length and has longer sleeves"], "B0090KHN7E"], '
    '["http://ecx.images-amazon.com/images/I/31Xx84xvupL._SX342_.jpg", '
    '["A paisley long sleeved short dress", " is belted and is navy blue"], "B009OCO9XO"]]}]'
)


def test_mtfashioniq(ctx: LoadContext, caplog: pytest.LogCaptureFixture) -> None:
    folder = ctx.root / "mtfashioniq"
    _write(folder / "data" / "all.val.json", MTFIQ)
    _write(
        folder / "image_splits" / "split.all.val.json", '[\n    "B004FPIBS4", \n    "B008VPNQCK", \n    "B009OCO9XO"\n]'
    )
    (task,) = mtfashioniq.load(ctx)
    q = task.queries[0]
    assert task.ks == (1, 5, 10) and q.positives == {"mtfashioniq:B008VPNQCK"}
    assert q.item.segments[1:] == (
        ("image", "mtfashioniq/images/B0090KHN7E.jpg"),
        ("text", "has long sleeves and has same length and has longer sleeves"),
        ("image", "mtfashioniq/images/B009OCO9XO.jpg"),
        ("text", "A paisley long sleeved short dress and is belted and is navy blue"),
    )
    assert [c.id for c in task.candidates] == [
        "mtfashioniq:B004FPIBS4",
        "mtfashioniq:B008VPNQCK",
        "mtfashioniq:B009OCO9XO",
    ]
    _write(folder / "image_splits" / "split.all.val.json", '["B004FPIBS4"]')
    (task,) = mtfashioniq.load(ctx)
    assert "mtfashioniq:B008VPNQCK" in {c.id for c in task.candidates} and task.notes  # target added, noted
    with caplog.at_level(logging.WARNING):
        load_suite(ctx, ["mtfashioniq"])
    assert "targets missing from" in caplog.text


def test_mtfashioniq_bad_turn(ctx: LoadContext) -> None:
    folder = ctx.root / "mtfashioniq"
    _write(
        folder / "data" / "all.val.json",
        MTFIQ.replace('["has long sleeves", "has same length and has longer sleeves"], ', ""),
    )
    _write(folder / "image_splits" / "split.all.val.json", '["B008VPNQCK"]')
    with pytest.raises(DataError, match=r"\(record 0/reference/0\): a reference turn must be \[image url"):
        mtfashioniq.load(ctx)


# --- CC-Neg --------------------------------------------------------------------------------------------------------
def _ccneg(path: Path, paths: list[str]) -> None:
    anns = [
        {
            "json": {"caption": "a dog sitting on a wooden bench in the park", "key": "000000001"},
            "sop_data": {"negative-prompt": "a dog not sitting on a wooden bench in the park"},
        },
        {
            "json": {"caption": "the view of the city from the top of the hill", "key": "000000002"},
            "sop_data": {"negative-prompt": "the view of the city, but not from the top of the hill"},
        },
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"image_paths": paths, "annotations": anns}, path)


def test_ccneg(ctx: LoadContext, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = "/workspace/datasets/cc3m/cc3m_subset_images_extracted_final/"
    _ccneg(ctx.root / "ccneg" / "ccneg_preprocessed.pt", [prefix + "00001.jpg", prefix + "00002.jpg"])
    (task,) = ccneg.load(ctx)
    assert task.metric == "accuracy" and len(task.queries) == 2
    q = task.queries[1]
    assert q.item.img_path == "ccneg/ccneg_images/cc3m_subset_images_extracted_final/00002.jpg"
    assert q.gallery == ("ccneg:1pos", "ccneg:1neg") and q.positives == {"ccneg:1pos"}
    assert task.candidates[3].text == "the view of the city, but not from the top of the hill"
    monkeypatch.setattr(ccneg, "EVAL_SAMPLES", 1)  # the evaluation split is the tail of the file
    assert [q.qid for q in ccneg.load(ctx)[0].queries] == ["ccneg:1"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_ccneg_errors(ctx: LoadContext) -> None:
    path = ctx.root / "ccneg" / "ccneg_preprocessed.pt"
    _ccneg(path, ["/data/cc3m/a.jpg", "/workspace/datasets/cc3m/b.jpg"])
    with pytest.raises(DataError, match=r"record 0: image path must start with /workspace/datasets/cc3m/"):
        ccneg.load(ctx)
    path.write_bytes(pickle.dumps({"image_paths": [Path("/x")], "annotations": [{}]}))
    with pytest.raises(DataError, match=r"ccneg_preprocessed.pt:file: not a readable CC-Neg .pt file"):
        ccneg.load(ctx)


# --- Sugar-Crepe ---------------------------------------------------------------------------------------------------
SUGAR = """{
    "0": {
        "filename": "000000544519.jpg",
        "caption": "A girl with a green shirt brushing her teeth with a blue toothbrush.",
        "negative_caption": "A girl with a blue shirt brushing her teeth with a green toothbrush."
    },
    "1": {
        "filename": "000000057597.jpg",
        "caption": "A soccer game where a girl in white is dribbling ahead of the girl in blue.",
        "negative_caption": "A soccer game where a girl in blue is dribbling ahead of the girl in white."
    }
}
"""


def test_sugar_crepe_subsets(ctx: LoadContext) -> None:
    data = ctx.root / "sugar_crepe" / "data"
    _write(data / "swap_att.json", SUGAR)
    _write(data / "add_ent.json", SUGAR)  # newer name of add_obj
    add_obj, swap_att = sugar_crepe.load(ctx)
    assert (add_obj.name, swap_att.name) == ("sugar_crepe_add_obj", "sugar_crepe_swap_att")
    q = swap_att.queries[0]
    assert q.item.img_path == "sugar_crepe/val2017/000000544519.jpg"
    assert q.gallery == ("sugar_crepe:swap_att0pos", "sugar_crepe:swap_att0neg")
    assert swap_att.candidates[1].text.startswith("A girl with a blue shirt")


def test_sugar_crepe_missing_negative(ctx: LoadContext) -> None:
    _write(
        ctx.root / "sugar_crepe" / "data" / "replace_rel.json",
        SUGAR.replace('"negative_caption": "A soccer', '"neg": "A soccer'),
    )
    with pytest.raises(DataError, match=r"replace_rel.json:line 7 \(record 1\): missing field 'negative_caption'"):
        sugar_crepe.load(ctx)


# --- the suite ----------------------------------------------------------------------------------------------------
def test_missing_dataset_is_skipped_with_a_warning(ctx: LoadContext, caplog: pytest.LogCaptureFixture) -> None:
    _write(ctx.root / "visdial" / "visdial_1.0_val.json", json.dumps(VISDIAL))
    with caplog.at_level(logging.WARNING):
        tasks, missing = load_suite(ctx, ["circo", "visdial"])
    assert missing == ["circo"] and [t.name for t in tasks] == ["visdial"]
    assert "zero-shot dataset circo skipped: no folder" in caplog.text
    values = column_values(tasks, {"visdial": {"R@1": 0.5, "R@5": 1.0}})
    assert list(values) == [c.key for c in COLUMNS] and len(values) == 13
    assert values["visdial"] == 0.5 and values["circo"] is None


def test_duplicate_ids_are_located(ctx: LoadContext) -> None:
    folder = ctx.root / "circo"
    _write(folder / "annotations" / "val.json", CIRCO_VAL)
    info = _write(
        folder / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", _circo_info([*CIRCO_IDS, 9761])
    )
    with pytest.raises(DataError, match=r"record images/7\): image id 9761 listed twice"):
        circo.load(ctx)
    assert info.is_file()
    dup = json.loads(json.dumps(FLICKR))
    dup["images"][1]["sentences"][1]["sentid"] = 5
    _write(ctx.root / "flickr30k" / "dataset_flickr30k.json", json.dumps(dup, indent=2))
    with pytest.raises(DataError, match=r"\(record images/1/sentences/1\): sentid 5 used twice"):
        flickr30k.load(ctx)
