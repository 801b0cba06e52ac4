"""The question bank: at least five phrasings per question kind, and the way back from a
question to the phrasing it came from (for statistics and text-only baselines).

A kind is "<category>.<form>": the category is one of GMAI-MMBench's clinical tasks as
curate names them (vqa.CATEGORIES), the form says what is asked (open, choice, yesno) or
which region is given (box: pixel coordinates in the question; mask: the index of a
region in the sample's masks.npz, 1-based, aligned with `rois`). Placeholders: {x} a
finding, {a_x} the finding with its article, {mod} the modality, {a_mod} the modality
with its article, {box}/{box2} a box "[x0, y0, x1, y1]", {m}/{m2} a mask number, {k} a
count, {k_x} a count with its noun ("two nodule regions"), {place} a location phrase,
{side} left/right, {word} an appearance word, {t} a size threshold, {region} a body
region, {tol} the tolerance.
"""

from __future__ import annotations

import re
from functools import lru_cache

BANK: dict[str, tuple[str, ...]] = {
    "modality.open": (
        "What imaging modality was used to acquire this image?",
        "Which imaging technique produced this image?",
        "What kind of medical image is this?",
        "With which modality was this image obtained?",
        "Name the imaging modality of this image.",
    ),
    "modality.choice": (
        "Which imaging modality is shown here?",
        "This image was acquired with which modality?",
        "Pick the modality of this image.",
        "What is the imaging modality of this picture?",
        "Choose the technique that produced this image.",
    ),
    "modality.yesno": (
        "Is this {a_mod} image?",
        "Was this image acquired with {mod}?",
        "Does this picture come from {mod}?",
        "Is {mod} the modality of this image?",
        "Is this image an example of {mod} imaging?",
    ),
    "organ.open": (
        "Which body region does this image show?",
        "What part of the body is imaged here?",
        "Which anatomical region is shown in this image?",
        "What body region was examined in this image?",
        "Name the body region shown in this image.",
    ),
    "organ.choice": (
        "Which body region is shown?",
        "Which anatomical region does this image cover?",
        "Pick the body region imaged here.",
        "This image shows which part of the body?",
        "Choose the region of the body in this image.",
    ),
    "organ.yesno": (
        "Does this image show the {region}?",
        "Is the {region} the region imaged here?",
        "Was the {region} examined in this image?",
        "Is this an image of the {region}?",
        "Does this image cover the {region}?",
    ),
    "organ.zone": (
        "In which zone does the {x} lie?",
        "Which zone holds the {x}?",
        "The {x} lies in which zone?",
        "Name the zone where the {x} is.",
        "Which zone is the {x} in?",
    ),
    "organ.box": (
        "Which organ contains the region in the box {box}?",
        "In which organ does the region in the box {box} lie?",
        "The region in the box {box} lies in which organ?",
        "Name the organ that holds the region in the box {box}.",
        "Which organ is the region inside the box {box} part of?",
    ),
    "presence.yesno": (
        "Is there {a_x} in this image?",
        "Does this image show {a_x}?",
        "Is {a_x} visible in this image?",
        "Can {a_x} be seen in this image?",
        "Does this image contain {a_x}?",
    ),
    "presence.box": (
        "Is there {a_x} inside the box {box}?",
        "Does the box {box} contain {a_x}?",
        "Is {a_x} present within the box {box}?",
        "Can {a_x} be seen inside the box {box}?",
        "Does the region inside the box {box} show {a_x}?",
    ),
    "counting.open": (
        "How many {x} regions are there in this image?",
        "How many separate {x} regions can be seen?",
        "Count the {x} regions in this image.",
        "What is the number of distinct {x} regions in this image?",
        "How many {x} regions does this image show?",
    ),
    "counting.yesno": (
        "Are there exactly {k_x} in this image?",
        "Does this image show exactly {k_x}?",
        "Is the number of {x} regions in this image {k}?",
        "Can exactly {k_x} be counted in this image?",
        "Is the count of {x} regions in this image exactly {k}?",
    ),
    "counting.points.open": (  # findings a source marks by points (no region)
        "How many {x}s are marked in this image?",
        "How many {x}s does this image mark?",
        "Count the {x}s marked in this image.",
        "What is the number of {x}s marked in this image?",
        "How many separate {x}s are marked here?",
    ),
    "counting.points.yesno": (
        "Are there exactly {k_x} marked in this image?",
        "Does this image mark exactly {k_x}?",
        "Is the number of {x}s marked in this image {k}?",
        "Can exactly {k_x} be counted among this image's marks?",
        "Is the count of marked {x}s in this image exactly {k}?",
    ),
    "localisation.choice": (
        "Where is the {x} located?",
        "Where in the image is the {x}?",
        "Which location best describes the {x}?",
        "Where does the {x} lie?",
        "Choose the location of the {x}.",
    ),
    "localisation.yesno": (
        "Is the {x} located {place}?",
        "Does the {x} lie {place}?",
        "Is the {x} found {place}?",
        "Would you place the {x} {place}?",
        "Is the {x} situated {place}?",
    ),
    "localisation.mask": (
        "Where is the region in mask {m} located?",
        "Where does the region outlined by mask {m} lie?",
        "Which location best describes the region in mask {m}?",
        "Where in the image is the region of mask {m}?",
        "Choose the location of the region outlined by mask {m}.",
    ),
    "localisation.box": (
        "Which box contains the {x}?",
        "In which of these boxes is the {x}?",
        "Which box outlines the {x}?",
        "Choose the box that holds the {x}.",
        "The {x} lies inside which box?",
    ),
    "laterality.choice": (
        "On which side of the patient is the {x}?",
        "Is the {x} on the patient's left or right side?",
        "Which side of the patient does the {x} lie on?",
        "On the patient's left or right: where is the {x}?",
        "Which side is the {x} on, the patient's left or right?",
    ),
    "laterality.yesno": (
        "Is the {x} on the patient's {side} side?",
        "Does the {x} lie on the patient's {side}?",
        "Is the {x} located on the patient's {side} side?",
        "Is the {x} {side}-sided?",
        "Would you place the {x} on the patient's {side}?",
    ),
    "laterality.box": (
        "Is the region in the box {box} on the patient's left or right side?",
        "On which side of the patient is the region in the box {box}?",
        "Which side of the patient does the region in the box {box} lie on?",
        "The region in the box {box} lies on which side of the patient?",
        "Left or right: on which side of the patient is the region in the box {box}?",
    ),
    "size.open": (
        "What is the longest diameter of the {x} in mm (answers within {tol} are accepted)?",
        "How long is the {x} at its longest, in mm (within {tol})?",
        "Give the longest diameter of the {x} in millimetres, to within {tol}.",
        "About how many mm does the {x} measure at its longest (within {tol})?",
        "Measure the {x}: its longest diameter in mm, to within {tol}?",
    ),
    "size.choice": (
        "Which is closest to the longest diameter of the {x}?",
        "About how large is the {x} at its longest?",
        "Pick the longest diameter of the {x}.",
        "What is the approximate longest diameter of the {x}?",
        "Choose the best estimate of the {x}'s longest diameter.",
    ),
    "size.yesno": (
        "Is the {x} longer than {t} mm in its longest diameter?",
        "Does the {x} measure more than {t} mm at its longest?",
        "Is the longest diameter of the {x} above {t} mm?",
        "Is the {x} larger than {t} mm across at its widest?",
        "Does the {x} exceed {t} mm in longest diameter?",
    ),
    "size.mask": (
        "What is the area of the region in mask {m}, in mm² (within {tol})?",
        "How large is the region outlined by mask {m}, in square millimetres (within {tol})?",
        "Give the in-plane area of the region in mask {m} in mm², to within {tol}.",
        "About how many mm² does the region of mask {m} cover (within {tol})?",
        "Estimate the area of the region in mask {m} in mm², to within {tol}.",
    ),
    "size.box": (
        "What is the longest diameter, in mm, of the region inside the box {box} (within {tol})?",
        "How long is the region in the box {box} at its longest, in mm (within {tol})?",
        "Give the longest diameter of the region within the box {box} in mm, to within {tol}.",
        "About how many mm does the region inside the box {box} measure at its longest (within {tol})?",
        "Measure the region in the box {box}: its longest diameter in mm, to within {tol}?",
    ),
    "attribute.choice": (
        "Compared with the surrounding tissue, how does the {x} appear?",
        "How does the {x} look relative to its surroundings?",
        "Which word best describes the {x} against the tissue around it?",
        "Relative to the adjacent tissue, the {x} appears how?",
        "Choose the appearance of the {x} relative to its surroundings.",
    ),
    "attribute.yesno": (
        "Does the {x} appear {word} relative to the surrounding tissue?",
        "Is the {x} {word} compared with its surroundings?",
        "Would you call the {x} {word} relative to the adjacent tissue?",
        "Is the {x} {word} against the tissue around it?",
        "Does the {x} look {word} compared with the tissue around it?",
    ),
    "attribute.mask": (
        "How does the region in mask {m} appear relative to the surrounding tissue?",
        "Compared with its surroundings, how does the region of mask {m} look?",
        "Which word best describes the region in mask {m} against the tissue around it?",
        "Relative to the adjacent tissue, how does the region outlined by mask {m} appear?",
        "Choose the appearance of the region in mask {m} relative to its surroundings.",
    ),
    "comparison.mask": (
        "Which is larger, the region in mask {m} or the region in mask {m2}?",
        "Of the regions in masks {m} and {m2}, which covers more area?",
        "Which region is bigger: mask {m} or mask {m2}?",
        "Compare the regions in masks {m} and {m2}: which is larger?",
        "Which of masks {m} and {m2} outlines the larger region?",
    ),
    "comparison.box": (
        "Is the region in the box {box} on the patient's left of the region in the box {box2}?",
        "Does the region in the box {box} lie to the patient's left of the one in the box {box2}?",
        "Relative to the region in the box {box2}, is the region in the box {box} on the patient's left?",
        "Is the region in the box {box} further to the patient's left than the region in the box {box2}?",
        "Comparing the boxes {box} and {box2}: is the first one on the patient's left of the second?",
    ),
    "clinical.yesno": (
        "Does this image carry the finding {x}?",
        "Is {x} present in this image?",
        "Is this image positive for {x}?",
        "Does this image show signs of {x}?",
        "Would this image be labelled with {x}?",
    ),
    "clinical.record": (
        "What diagnosis does the source record for the patient this image comes from?",
        "According to the source's records, what is this patient's diagnosis?",
        "What is the recorded diagnosis of the patient whose image this is?",
        "Which diagnosis is on record for this patient?",
        "What diagnosis do the patient's records give?",
    ),
    "clinical.choice": (
        "Which of these findings does this image show?",
        "Which finding is present in this image?",
        "Pick the finding shown in this image.",
        "Which label applies to this image?",
        "Choose the finding this image is positive for.",
    ),
}


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[str, re.Pattern]]:
    out = []
    for kind, phrasings in BANK.items():
        for i, text in enumerate(phrasings):
            pattern = re.sub(r"\\\{(\w+)\\\}", "(.+?)", re.escape(text))
            out.append((f"{kind}#{i}", re.compile(f"^{pattern}$")))
    # the most literal text first, so "Is {a_x} visible" does not swallow a longer template
    out.sort(key=lambda p: -len(p[1].pattern.replace("(.+?)", "")))
    return out


def template_of(question: str) -> str | None:
    """The bank phrasing a question was made from ("presence.yesno#2"), or None."""
    for key, pattern in _patterns():
        if pattern.match(question):
            return key
    return None
