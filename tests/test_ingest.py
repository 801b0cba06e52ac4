import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from curate.ingest import adapter
from curate.ingest.dicom import plan_dicom, read_dicom
from curate.model.recipe import NormalizeConfig, SourceSpec
from curate.sources.phantoms import write_dicom_series
from curate.unit.normalize import volume_views


def dicom_spec(path, images=("**/*.dcm",)):
    return SourceSpec(name="d", format="dicom", path=str(path), layout={"images": list(images)})


def test_ct_small_is_read_in_hu():
    path = get_testdata_file("CT_small.dcm")
    from pathlib import Path
    root = Path(path).parent
    spec = dicom_spec(root, ["CT_small.dcm"])
    units, problems = plan_dicom(spec, root)
    assert len(units) == 1 and not problems
    (case,) = read_dicom(spec, root, units[0])
    arr = sitk.GetArrayFromImage(case.image)
    assert arr.shape == (1, 128, 128)
    assert -1100 < arr.min() < -800 and arr.max() < 3000  # air in HU after the -1024 intercept, no int16 overflow
    assert case.meta.modality == "CT"
    assert case.image.GetSpacing()[:2] == pytest.approx((0.661468, 0.661468))


def test_series_split_and_ordered_by_position_not_instance_number(tmp_path):
    hu = np.zeros((6, 16, 16), np.float32)
    hu += np.arange(6)[:, None, None] * 100  # slice k has HU k*100
    write_dicom_series(tmp_path / "a", hu, (0.5, 0.5, 2.0), shuffle_seed=3)
    write_dicom_series(tmp_path / "a", hu[:3], (0.5, 0.5, 2.0))  # a second series, same folder
    spec = dicom_spec(tmp_path)
    units, _ = plan_dicom(spec, tmp_path)
    assert sorted(len(u.files) for u in units) == [3, 6]
    big = max(units, key=lambda u: len(u.files))
    (case,) = read_dicom(spec, tmp_path, big)
    arr = sitk.GetArrayFromImage(case.image)
    assert np.allclose(arr[:, 0, 0], np.arange(6) * 100)
    assert case.image.GetSpacing()[2] == pytest.approx(2.0)


def test_corrupt_dicom_is_a_plan_problem(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom file at all")
    units, problems = plan_dicom(dicom_spec(tmp_path), tmp_path)
    assert units == [] and problems[0].file == "bad.dcm"


def test_nifti_las_volume_reads_and_reorients():
    from pathlib import Path

    import nibabel
    root = Path(nibabel.__file__).parent / "tests" / "data"
    spec = SourceSpec(name="n", format="nifti", modality="MR", path=str(root),
                      layout={"images": ["anatomical.nii"]})
    plan, read = adapter(spec.format)
    units, _ = plan(spec, root)
    (case,) = read(spec, root, units[0])
    views = volume_views(case, NormalizeConfig(), np.random.default_rng(0))
    assert views and views[0].image.dtype == np.uint8
    assert views[0].window["method"] == "percentile"


def test_unsupported_family_says_so(monkeypatch):
    from curate import ingest
    from curate.model.errors import UnsupportedFormat
    from curate.model.recipe import FormatFamily
    monkeypatch.delitem(ingest.ADAPTERS, FormatFamily.wsi)
    with pytest.raises(UnsupportedFormat, match="'wsi' is declared but has no adapter"):
        adapter(FormatFamily.wsi)


def test_nibabel_fallback_matches_simpleitk_geometry():
    """Files SimpleITK cannot read go through nibabel; on one both read, they must agree."""
    from pathlib import Path

    import nibabel
    import numpy as np
    import SimpleITK as sitk

    from curate.ingest.volume import from_nibabel
    from curate.unit.normalize import to_lps
    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    ref = to_lps(sitk.ReadImage(str(path), sitk.sitkFloat32))
    (ours,) = from_nibabel(path)
    ours = to_lps(ours)
    assert np.allclose(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(ours))
    assert np.allclose(ref.GetSpacing(), ours.GetSpacing())
    assert np.allclose(ref.GetOrigin(), ours.GetOrigin(), atol=1e-4)
    assert np.allclose(ref.GetDirection(), ours.GetDirection(), atol=1e-6)


def test_formats_only_nibabel_reads_become_volumes():
    from pathlib import Path

    import nibabel
    root = Path(nibabel.__file__).parent / "tests" / "data"
    spec = SourceSpec(name="n", format="nifti", modality="MR", path=str(root),
                      layout={"images": ["example_nifti2.nii.gz", "test.mgz"]})
    plan, read = adapter(spec.format)
    units, _ = plan(spec, root)
    for unit in units:
        (case,) = read(spec, root, unit)
        assert case.image.GetDimension() == 3
