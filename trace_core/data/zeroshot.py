"""Layout of the zero-shot root (``paths.zeroshot_root``): one folder per unseen dataset.

Inside each folder the files keep the names and formats their authors distribute (documented,
with sources, in ``trace_core/evaluation/zeroshot/<dataset>.py``); only the folder names and
where images sit relative to the annotation files are ours. ``trace download`` fills the root:
generated zero-shot-mini files (``download.profile: mini``) or, with ``download.zeroshot_from_dir``,
links to real copies arranged like this::

    sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json   + the images it names (coco/, sam/, ...)
    urban1k/image/<n>.jpg, urban1k/caption/<n>.txt
    flickr30k/dataset_flickr30k.json, flickr30k/flickr30k-images/<filename>
    circo/annotations/val.json, circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json,
        circo/COCO2017_unlabeled/unlabeled2017/<file_name>
    genecis/annotations/{change,focus}_{attribute,object}.json, genecis/coco/val2017/<id:012d>.jpg,
        genecis/vg/VG_100K/<image_id>.jpg
    visdial/visdial_1.0_val.json, visdial/VisualDialog_val2018/VisualDialog_val2018_<id:012d>.jpg
    vist/sis/val.story-in-sequence.json, vist/images/val/<photo_flickr_id>.{jpg,png,gif}
    mtfashioniq/data/all.val.json, mtfashioniq/image_splits/split.all.val.json, mtfashioniq/images/<asin>.jpg
    ccneg/ccneg_preprocessed.pt, ccneg/ccneg_images/cc3m_subset_images_extracted_final/<name>.jpg
    sugar_crepe/data/<subset>.json, sugar_crepe/val2017/<filename>
"""

from __future__ import annotations

from trace_core.config import ZEROSHOT_DATASETS

#: the ten unseen datasets, in the paper's column order (folder names under the zero-shot root).
DATASETS: tuple[str, ...] = ZEROSHOT_DATASETS

SHAREGPT4V_JSON = "sharegpt4v_instruct_gpt4-vision_cap100k.json"

URBAN1K_IMAGES = "image"
URBAN1K_CAPTIONS = "caption"

FLICKR30K_JSON = "dataset_flickr30k.json"
FLICKR30K_IMAGES = "flickr30k-images"

CIRCO_ANNOTATIONS = "annotations/val.json"  # test.json carries no ground truth (evaluation server)
CIRCO_IMAGE_INFO = "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
CIRCO_IMAGES = "COCO2017_unlabeled/unlabeled2017"

GENECIS_SUBSETS: tuple[str, ...] = ("change_attribute", "change_object", "focus_attribute", "focus_object")
GENECIS_ANNOTATIONS = "annotations"
GENECIS_COCO_IMAGES = "coco/val2017"
GENECIS_VG_IMAGES = "vg/VG_100K"

VISDIAL_JSON = "visdial_1.0_val.json"
VISDIAL_IMAGES = "VisualDialog_val2018"

VIST_JSON = "sis/val.story-in-sequence.json"
VIST_IMAGES = "images/val"
VIST_SUFFIXES: tuple[str, ...] = (".jpg", ".png", ".gif")

MTFASHIONIQ_QUERIES = "data/all.val.json"
MTFASHIONIQ_GALLERY = "image_splits/split.all.val.json"
MTFASHIONIQ_IMAGES = "images"

CCNEG_FILE = "ccneg_preprocessed.pt"
CCNEG_IMAGES = "ccneg_images"
CCNEG_PATH_PREFIX = "/workspace/datasets/cc3m/"  # prefix of every image path inside the .pt file

#: Sugar-Crepe's seven subsets; newer copies name the object subsets ``*_ent`` (same records).
SUGAR_CREPE_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("add_att",),
    ("add_obj", "add_ent"),
    ("replace_att",),
    ("replace_obj", "replace_ent"),
    ("replace_rel",),
    ("swap_att",),
    ("swap_obj", "swap_ent"),
)
SUGAR_CREPE_DATA = "data"
SUGAR_CREPE_IMAGES = "val2017"
