"""Natural dataset pairs through TFDS: the tables and the OOD-side datasets.

The pairs of specs/ood.md, each an (in-distribution TFDS dataset, OOD TFDS
dataset and split) entry of the shift registry (`crl.shifts.registry`):

    shift                       ID            OOD (TFDS name)
    cifar10_1                   cifar10       cifar10_1/v6
    cifar10_corrupted/<c>/<s>   cifar10       cifar10_corrupted/<c'>_<s>
    imagenet_v2                 imagenet2012  imagenet_v2/matched-frequency
    imagenet_r                  imagenet2012  imagenet_r (200 classes)
    imagenet_a                  imagenet2012  imagenet_a (200 classes)
    imagenet_sketch             imagenet2012  imagenet_sketch
    imagenet2012_corrupted/...  imagenet2012  imagenet2012_corrupted/<c>_<s>
    domainnet/<domain>          domainnet/*   domainnet/<domain>
    svhn_cropped (semantic)     cifar10       svhn_cropped
    cifar100 (semantic)         cifar10       cifar100

The OOD split is 'test' ('validation' for imagenet2012_corrupted).
CIFAR-10.1 is v6, the class-balanced version; v4, TFDS's default, is the one
of the paper's main tables.

`<c>` is a corruption name of `crl.shifts.corruptions` (imagecorruptions'
names); CIFAR-10-C calls two of them differently in TFDS (`glass_blur` ->
`frosted_glass_blur`, `elastic_transform` -> `elastic`), `<c'>`.

Domain pairs (DomainBed-style, one domain against another): DomainNet's six
domains (`DOMAINNET_DOMAINS`, the same 345 classes) are TFDS configs of one
dataset, so a run trained on `domainnet/real` is evaluated on the test split
of each of the other five (`domainnet/<domain>`); its own domain does not
apply (its test split is the run's ID split). Any other multi-domain set
prepared as TFDS datasets of one label space is added the same way with
`register`.

A pair applies to a run whose data is `TFDSImageClassification` of the ID
dataset (its base name, any version; for domain pairs another config); the
OOD side is read with the same `resolution` (resize + centre crop; the
native size when None) and `data_dir`, as host batches through
`crl.data.pipeline.InputPipeline`. Nothing is ever downloaded: data that is
not prepared raises `tfds_input.DatasetNotPreparedError` naming the `tfds
build` command. Other pairs can be added with
`crl.shifts.registry.register(Shift(..., source="tfds", ...))`.

Class subsets. TFDS stores ImageNet-R and ImageNet-A labels in the 1000-class
ImageNet label space (their `ClassLabel` is imagenet2012's, the wnid list),
but each covers 200 classes; as in the papers (Hendrycks et al.), the logits
of the other 800 classes are set to -inf before any metric. The 200 wnids of
each (`IMAGENET_R_WNIDS`, `IMAGENET_A_WNIDS`) are the lists published with
the datasets (the `imagenet_r_wnids` / `imagenet_a_wnids` of the authors'
evaluation code, as reproduced in the public evaluation code of other
projects; two independent copies of each were compared and agree); they are
mapped to logit indices through the ID dataset's own `ClassLabel` names, so
the mask follows the label order of the data the model was trained on. An
example whose label lies outside the subset is a data error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crl.data import pipeline as pipeline_lib

IMAGENET_R_WNIDS = tuple("""
    n01443537 n01484850 n01494475 n01498041 n01514859 n01518878 n01531178
    n01534433 n01614925 n01616318 n01630670 n01632777 n01644373 n01677366
    n01694178 n01748264 n01770393 n01774750 n01784675 n01806143 n01820546
    n01833805 n01843383 n01847000 n01855672 n01860187 n01882714 n01910747
    n01944390 n01983481 n01986214 n02007558 n02009912 n02051845 n02056570
    n02066245 n02071294 n02077923 n02085620 n02086240 n02088094 n02088238
    n02088364 n02088466 n02091032 n02091134 n02092339 n02094433 n02096585
    n02097298 n02098286 n02099601 n02099712 n02102318 n02106030 n02106166
    n02106550 n02106662 n02108089 n02108915 n02109525 n02110185 n02110341
    n02110958 n02112018 n02112137 n02113023 n02113624 n02113799 n02114367
    n02117135 n02119022 n02123045 n02128385 n02128757 n02129165 n02129604
    n02130308 n02134084 n02138441 n02165456 n02190166 n02206856 n02219486
    n02226429 n02233338 n02236044 n02268443 n02279972 n02317335 n02325366
    n02346627 n02356798 n02363005 n02364673 n02391049 n02395406 n02398521
    n02410509 n02423022 n02437616 n02445715 n02447366 n02480495 n02480855
    n02481823 n02483362 n02486410 n02510455 n02526121 n02607072 n02655020
    n02672831 n02701002 n02749479 n02769748 n02793495 n02797295 n02802426
    n02808440 n02814860 n02823750 n02841315 n02843684 n02883205 n02906734
    n02909870 n02939185 n02948072 n02950826 n02951358 n02966193 n02980441
    n02992529 n03124170 n03272010 n03345487 n03372029 n03424325 n03452741
    n03467068 n03481172 n03494278 n03495258 n03498962 n03594945 n03602883
    n03630383 n03649909 n03676483 n03710193 n03773504 n03775071 n03888257
    n03930630 n03947888 n04086273 n04118538 n04133789 n04141076 n04146614
    n04147183 n04192698 n04254680 n04266014 n04275548 n04310018 n04325704
    n04347754 n04389033 n04409515 n04465501 n04487394 n04522168 n04536866
    n04552348 n04591713 n07614500 n07693725 n07695742 n07697313 n07697537
    n07714571 n07714990 n07718472 n07720875 n07734744 n07742313 n07745940
    n07749582 n07753275 n07753592 n07768694 n07873807 n07880968 n07920052
    n09472597 n09835506 n10565667 n12267677
""".split())

IMAGENET_A_WNIDS = tuple("""
    n01498041 n01531178 n01534433 n01558993 n01580077 n01614925 n01616318
    n01631663 n01641577 n01669191 n01677366 n01687978 n01694178 n01698640
    n01735189 n01770081 n01770393 n01774750 n01784675 n01819313 n01820546
    n01833805 n01843383 n01847000 n01855672 n01882714 n01910747 n01914609
    n01924916 n01944390 n01985128 n01986214 n02007558 n02009912 n02037110
    n02051845 n02077923 n02085620 n02099601 n02106550 n02106662 n02110958
    n02119022 n02123394 n02127052 n02129165 n02133161 n02137549 n02165456
    n02174001 n02177972 n02190166 n02206856 n02219486 n02226429 n02231487
    n02233338 n02236044 n02259212 n02268443 n02279972 n02280649 n02281787
    n02317335 n02325366 n02346627 n02356798 n02361337 n02410509 n02445715
    n02454379 n02486410 n02492035 n02504458 n02655020 n02669723 n02672831
    n02676566 n02690373 n02701002 n02730930 n02777292 n02782093 n02787622
    n02793495 n02797295 n02802426 n02814860 n02815834 n02837789 n02879718
    n02883205 n02895154 n02906734 n02948072 n02951358 n02980441 n02992211
    n02999410 n03014705 n03026506 n03124043 n03125729 n03187595 n03196217
    n03223299 n03250847 n03255030 n03291819 n03325584 n03355925 n03384352
    n03388043 n03417042 n03443371 n03444034 n03445924 n03452741 n03483316
    n03584829 n03590841 n03594945 n03617480 n03666591 n03670208 n03717622
    n03720891 n03721384 n03724870 n03775071 n03788195 n03804744 n03837869
    n03840681 n03854065 n03888257 n03891332 n03935335 n03982430 n04019541
    n04033901 n04039381 n04067472 n04086273 n04099969 n04118538 n04131690
    n04133789 n04141076 n04146614 n04147183 n04179913 n04208210 n04235860
    n04252077 n04252225 n04254120 n04270147 n04275548 n04310018 n04317175
    n04344873 n04347754 n04355338 n04366367 n04376876 n04389033 n04399382
    n04442312 n04456115 n04482393 n04507155 n04509417 n04532670 n04540053
    n04554684 n04562935 n04591713 n04606251 n07583066 n07695742 n07697313
    n07697537 n07714990 n07718472 n07720875 n07734744 n07749582 n07753592
    n07760859 n07768694 n07831146 n09229709 n09246464 n09472597 n09835506
    n11879895 n12057211 n12144580 n12267677
""".split())

CLASS_SUBSETS = {"imagenet_r": IMAGENET_R_WNIDS,
                 "imagenet_a": IMAGENET_A_WNIDS}

# name -> (kind, ID dataset, OOD TFDS name, split, class subset, description)
PAIRS: dict[str, tuple[str, str, str, str, str | None, str]] = {
    "cifar10_1": (
        "natural", "cifar10", "cifar10_1/v6", "test", None,
        "CIFAR-10.1 v6: 2,000 new test images collected like CIFAR-10's "
        "(Recht et al. 2018)"),
    "imagenet_v2": (
        "natural", "imagenet2012", "imagenet_v2/matched-frequency", "test",
        None, "ImageNetV2 matched-frequency: 10,000 new test images "
        "(Recht et al. 2019)"),
    "imagenet_r": (
        "natural", "imagenet2012", "imagenet_r", "test", "imagenet_r",
        "ImageNet-R: renditions (art, cartoons, sketches, ...) of 200 "
        "classes; logits masked to those 200 (Hendrycks et al. 2021)"),
    "imagenet_a": (
        "natural", "imagenet2012", "imagenet_a", "test", "imagenet_a",
        "ImageNet-A: natural adversarial examples of 200 classes; logits "
        "masked to those 200 (Hendrycks et al. 2021)"),
    "imagenet_sketch": (
        "natural", "imagenet2012", "imagenet_sketch", "test", None,
        "ImageNet-Sketch: black-and-white sketches of the 1000 classes "
        "(Wang et al. 2019)"),
    "svhn_cropped": (
        "semantic", "cifar10", "svhn_cropped", "test", None,
        "SVHN digits: classes disjoint from CIFAR-10 (OOD detection)"),
    "cifar100": (
        "semantic", "cifar10", "cifar100", "test", None,
        "CIFAR-100 test images: classes disjoint from CIFAR-10 (OOD "
        "detection, near-OOD)"),
}

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real",
                     "sketch")
for _domain in DOMAINNET_DOMAINS:
  PAIRS[f"domainnet/{_domain}"] = (
      "natural", "domainnet", f"domainnet/{_domain}", "test", None,
      f"DomainNet {_domain}: the 345 classes in the {_domain} domain, for a "
      "run trained on another DomainNet domain (Peng et al. 2019; a "
      "DomainBed dataset)")

# Corrupted copies of the ID test set: family -> (ID dataset, split,
# {our corruption name: the TFDS config's name}).
_CIFAR_C_NAMES = {"glass_blur": "frosted_glass_blur",
                  "elastic_transform": "elastic"}
CORRUPTED = {
    "cifar10_corrupted": ("cifar10", "test", _CIFAR_C_NAMES),
    "imagenet2012_corrupted": ("imagenet2012", "validation", {}),
}


def corrupted_tfds_name(family: str, corruption: str, severity: int) -> str:
  """The TFDS name of `family`'s `corruption` at `severity` (1..5)."""
  renames = CORRUPTED[family][2]
  return f"{family}/{renames.get(corruption, corruption)}_{int(severity)}"


def tfds_base_name(tfds_name: str) -> str:
  """'imagenet2012:5.1.0' or 'cifar10_corrupted/fog_1' -> the builder name."""
  return tfds_name.split(":")[0].split("/")[0]


def applies_to(shift: Any, dataset: Any) -> str | None:
  """Why the TFDS pair `shift` cannot run on `dataset`, or None if it can."""
  name = getattr(dataset, "tfds_name", None)
  if not isinstance(name, str) or not hasattr(dataset, "eval_numpy"):
    return (f"needs a model trained on TFDS {shift.id_dataset!r}; this run's "
            f"data is {type(dataset).__name__}")
  if tfds_base_name(name) != shift.id_dataset:
    return (f"pairs with TFDS {shift.id_dataset!r}; this run's data is TFDS "
            f"{name!r}")
  if name.split(":")[0] == shift.tfds_name.split(":")[0]:
    return (f"is this run's own data (TFDS {name!r}); domain pairs evaluate "
            "the other domains")
  return None


def ood_dataset(shift: Any, id_dataset: Any) -> Any:
  """The OOD side of `shift` as a `TFDSImageClassification`, checked.

  Read with the ID dataset's `resolution` and `data_dir`; its one eval split
  is `shift.tfds_split`.

  Raises:
    DatasetNotPreparedError: the OOD data is not prepared locally.
    DataError: the image size or (for covariate shifts) the label space
      differs from the ID dataset's.
  """
  from crl.data import tfds_input  # pylint: disable=g-import-not-at-top
  ds = tfds_input.TFDSImageClassification(
      tfds_name=shift.tfds_name, train_split=shift.tfds_split,
      eval_split_names=(shift.tfds_split,), resolution=id_dataset.resolution,
      data_dir=id_dataset.data_dir, augment=False)
  ds.builder  # pylint: disable=pointless-statement  (checks it is prepared)
  if ds.image_shape != id_dataset.image_shape:
    raise pipeline_lib.DataError(
        f"Shift {shift.name!r}: TFDS {shift.tfds_name!r} images are "
        f"{ds.image_shape}, the model's {id_dataset.image_shape}; set "
        "config.data.resolution so that both are resized alike.")
  if shift.kind != "semantic":
    id_label = id_dataset.builder.info.features[id_dataset.label_key]
    ood_label = ds.builder.info.features[ds.label_key]
    # Names count only where both datasets have them (CIFAR-10's are set when
    # it is prepared; CIFAR-10.1 and CIFAR-10-C declare only 10 classes).
    named = all(list(label.names) != [str(i) for i in range(
        label.num_classes)] for label in (id_label, ood_label))
    if (ood_label.num_classes != id_label.num_classes or
        (named and list(ood_label.names) != list(id_label.names))):
      raise pipeline_lib.DataError(
          f"Shift {shift.name!r}: TFDS {shift.tfds_name!r} has "
          f"{ood_label.num_classes} classes that are not those of "
          f"{id_dataset.tfds_name!r} ({id_label.num_classes}); a covariate "
          "shift needs the same label space.")
  return ds


def class_mask(shift: Any, id_dataset: Any) -> np.ndarray | None:
  """bool `[classes]`: the logits `shift` keeps (None: all of them).

  Raises:
    DataError: the ID dataset's label names lack some of the subset's wnids.
  """
  if shift.class_subset is None:
    return None
  wnids = CLASS_SUBSETS[shift.class_subset]
  names = list(id_dataset.builder.info.features[id_dataset.label_key].names)
  mask = np.isin(np.asarray(names), np.asarray(wnids))
  if mask.sum() != len(wnids):
    missing = sorted(set(wnids) - set(names))
    raise pipeline_lib.DataError(
        f"Shift {shift.name!r}: the ID dataset's label names do not include "
        f"{len(missing)} of the {len(wnids)} wnids of {shift.class_subset} "
        f"(first {missing[:3]}); it needs ImageNet's 1000 wnid labels.")
  return mask
