"""The rules for real-report phrasing: placeholders, soft signs that yield, benign explanations, CT's
translated wording and lymph nodes by size. Sentences from (or in the manner of) the development suite.
"""

from __future__ import annotations

import pytest

from dpcore.labeling import RuleTeacher
from dpcore.labeling.context import explained_value, yield_soft_signs
from dpcore.labeling.phrases import normalize


@pytest.fixture(scope="module")
def cxr() -> RuleTeacher:
    return RuleTeacher()


@pytest.fixture(scope="module")
def ct() -> RuleTeacher:
    return RuleTeacher(label_set="ctrate")


def labels(teacher: RuleTeacher, text: str) -> dict[str, int]:
    return {
        k: v for k, v in zip(teacher.label_set.labels, teacher.label_text(text), strict=True) if v is not None
    }


def test_placeholders_are_dropped_and_leave_no_empty_list_items() -> None:
    assert normalize("No XXXX, XXXX, or pneumothorax.")[0] == "no, or pneumothorax."
    assert normalize("Right ___ PICC; [**Clip Number (Radiology) 48213**] clear")[0] == "right picc; clear"
    assert normalize("The XXXX-year-old patient")[0] == "the -year-old patient"
    assert normalize("Dr. ___ was called", {"dr.": "doctor"}) == ("doctor was called", [])


def test_placeholders_neither_create_nor_hide_nor_break_scope(cxr: RuleTeacher) -> None:
    assert labels(cxr, "[** Clip Number (Radiology) 48213 **] No acute cardiopulmonary process.") == {
        "No Finding": 1
    }
    assert labels(cxr, "Right-sided ___ PICC is unchanged in position.") == {
        "No Finding": 1,
        "Support Devices": 1,
    }
    assert labels(cxr, "The ___ line has been removed.") == {"No Finding": 1, "Support Devices": 0}
    assert labels(cxr, "No evidence of XXXX pneumothorax, XXXX effusion, or consolidation.") == {
        "No Finding": 1,
        "Consolidation": 0,
        "Pneumothorax": 0,
        "Pleural Effusion": 0,
    }
    # Lines that are not devices stay out.
    assert "Support Devices" not in labels(cxr, "Septal lines have resolved.")


def test_a_soft_sign_yields_to_an_explicit_negation(cxr: RuleTeacher) -> None:
    assert labels(cxr, "Mild vascular congestion.") == {"Edema": -1}  # CheXpert
    negated = "There is pulmonary vascular congestion, but no interstitial or alveolar edema."
    assert labels(cxr, negated) == {"Edema": 0}  # No Finding stays blank: congestion is a finding
    assert ("No Finding", "pulmonary vascular congestion", -1) in cxr.explain(negated)
    assert labels(cxr, "Cephalization is noted. No frank pulmonary edema.") == {"Edema": 0}
    mentions = [(5, -1, 0, 10), (5, 0, 20, 25), (3, 1, 30, 35)]
    assert yield_soft_signs(mentions, [True, False, False], None) == mentions[1:]


def test_benign_explanations_drop_a_nodule_or_make_it_uncertain(cxr: RuleTeacher, ct: RuleTeacher) -> None:
    assert labels(cxr, "A nodular density in the right lower zone represents the nipple.") == {
        "No Finding": 1
    }
    assert labels(cxr, "Small nodule in the lingula, which could represent overlap of vessels.") == {
        "Lung Lesion": -1
    }
    assert labels(cxr, "Scattered calcified pulmonary nodules.") == {}  # CheXpert's unmention
    # No explaining word before it, or a new clause: the explanation is about something else.
    assert labels(cxr, "Nodule in the right upper lobe overlapping the posterior rib.") == {"Lung Lesion": 1}
    text = "Right lower lobe nodule is again seen, and there are bilateral nipple shadows."
    assert labels(cxr, text) == {"Lung Lesion": 1}
    assert labels(ct, "The suspected nodule in the right middle lobe is a vessel seen end-on.") == {}
    assert labels(ct, "Calcified nodule in the left lower lobe, compatible with granuloma.") == {
        "Lung nodule": 1
    }
    t = "the nodule is a vessel."
    assert explained_value(t, 10, [(t.index("vessel"), 22)], len(t), 1) is None
    assert explained_value(t, 10, [(t.index("vessel"), 22)], 14, 1) == 1  # in the next sentence


def test_healed_infection_is_no_pneumonia(cxr: RuleTeacher) -> None:
    assert labels(cxr, "Healed infection at the left apex with scarring.") == {"Lung Opacity": 1}
    assert labels(cxr, "Infection cannot be entirely excluded in the right lower lobe.") == {"Pneumonia": -1}


def test_nominalised_increases_and_the_pseudo_negation_they_are_not(ct: RuleTeacher) -> None:
    assert labels(ct, "Increase in bronchial wall thickness in both lower lobes.") == {
        "Peribronchial thickening": 1
    }
    assert labels(ct, "Without increase in interlobular septal thickness.") == {
        "Interlobular septal thickening": 0
    }
    assert labels(ct, "No increase in the mediastinal lymphadenopathy.") == {"Lymphadenopathy": 1}  # pseudo
    assert labels(ct, "There is an increase in heart size.") == {"Cardiomegaly": 1}
    assert labels(ct, "Fluid was detected in the pericardial space, 8 mm thick.") == {
        "Pericardial effusion": 1
    }


def test_coronary_plaque_is_coronary_and_aortic_plaque_arterial(ct: RuleTeacher) -> None:
    assert labels(ct, "Atheromatous plaques in the LAD and circumflex arteries.") == {
        "Coronary artery wall calcification": 1
    }
    assert labels(
        ct, "Atherosclerotic calcified plaques in the descending aorta, with no coronary plaque."
    ) == {
        "Arterial wall calcification": 1,
        "Coronary artery wall calcification": 0,
    }


def test_lymph_nodes_by_station_and_size(ct: RuleTeacher) -> None:
    assert labels(ct, "A 9 x 14 mm node in the aortopulmonary window.") == {"Lymphadenopathy": 0}
    assert labels(ct, "Right hilar node, enlarged at 18 mm.") == {"Lymphadenopathy": 1}
    assert labels(ct, "Prevascular lymph nodes, none reaching the pathological size threshold.") == {
        "Lymphadenopathy": 0
    }
    # The sub-centimetre wording needs its negation: without it, nothing is said.
    assert labels(ct, "Lymph nodes reaching the pathological size threshold.") != {"Lymphadenopathy": 0}
    assert labels(ct, "Mediastinal lymph nodes measuring up to ___ mm.") == {}  # a hidden size
