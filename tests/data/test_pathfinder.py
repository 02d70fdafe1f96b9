"""Pathfinder: labels are balanced and mean what they say (checked by flood fill), images are cached."""

import numpy as np
import pytest
from scipy import ndimage

from sequax.data import make_task, pathfinder


def marker_components(mask, markers, scale):
    """Connected-component labels (8-connectivity) of the ink under each marker centre."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    return [labels[int(y), int(x)] for x, y in markers * scale]


@pytest.mark.parametrize("resolution", [32, 128])
def test_label_says_whether_the_markers_are_connected(resolution):
    """With gap-free contours the markers share a component of the drawn ink exactly when the label is 1
    (flood fill on the supersampled ink; at 32 px anti-aliased neighbours may touch at a pixel)."""
    style = pathfinder.Style(resolution=resolution, dash_gap=0.0, contour_length=8)
    rng = np.random.default_rng(0)
    drawn = touching = 0
    for i in range(40 if resolution == 32 else 6):
        label = i % 2
        example = pathfinder.draw_example(rng, style, label)
        if example is None:
            continue
        image, info = example
        assert image.shape == (resolution, resolution) and image.dtype == np.uint8
        dashes = [d for c in info["contours"] for d in c]
        fine = pathfinder.render(style, dashes, info["markers"], supersampled=True)
        scale = resolution / pathfinder.BASE * pathfinder.SUPERSAMPLE
        a, b = marker_components(fine, info["markers"], scale)
        assert a and b  # both markers are inked
        assert (a == b) == bool(label), f"example {i}: label {label}"
        pa, pb = marker_components(image > 0, info["markers"], resolution / pathfinder.BASE)
        assert pa == pb or not label  # a marked contour is connected in the image too
        touching += bool(pa == pb and not label)
        assert len(info["contours"]) == 1 + style.num_distractors
        drawn += 1
    assert drawn >= (20 if resolution == 32 else 3)
    assert touching <= drawn // 8  # rarely do two contours meet at an anti-aliased pixel


def test_dashed_contours_have_gaps_and_the_same_length():
    style = pathfinder.Style()
    rng = np.random.default_rng(1)
    example = None
    while example is None:
        example = pathfinder.draw_example(rng, style, 1)
    image, info = example
    lengths = {len(c) for c in info["contours"]}
    assert lengths == {style.contour_length}  # ink does not give the label away
    # A dashed contour is drawn as separate dashes (at 32 px anti-aliasing blurs the gaps: count them on
    # the supersampled ink); its dashes are dash_length long.
    fine = pathfinder.render(style, [d for c in info["contours"] for d in c], info["markers"], supersampled=True)
    pieces = ndimage.label(fine, structure=np.ones((3, 3)))[1]
    assert pieces >= len(info["contours"]) * (style.contour_length - 2)
    for start, end in info["contours"][0]:
        np.testing.assert_allclose(np.linalg.norm(end - start), style.dash_length, rtol=1e-9)


def test_task_splits_are_balanced_cached_and_flattened(tmp_path, capsys):
    kwargs = dict(num_train=120, num_validation=20, num_test=20, seed=4, num_workers=1, cache_dir=str(tmp_path))
    task = make_task("pathfinder", **kwargs)
    assert task.seq_len == 1024 and task.vocab_size == 256 and task.num_classes == 2
    labels = np.concatenate([np.asarray(task.splits[s]["label"]) for s in ("train", "validation", "test")])
    assert 0.35 < labels.mean() < 0.65  # each label with probability 1/2
    batch = task.examples("train", np.arange(8))
    assert batch["inputs"].shape == (8, 1024) and batch["inputs"].max() <= 255
    assert batch["inputs"].max() == 255 and (batch["lengths"] == 1024).all()
    ink = (np.asarray(task.splits["train"]["inputs"]) > 0).mean()
    assert 0.05 < ink < 0.4
    assert "building" in capsys.readouterr().out
    from sequax.data import cache

    cache._LOADED.clear()
    again = make_task("pathfinder", **kwargs)
    assert "building" not in capsys.readouterr().out
    np.testing.assert_array_equal(again.splits["test"]["inputs"], task.splits["test"]["inputs"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_distractors=0), "num_distractors must be >= 1"),
    (dict(resolution=8), "resolution must be at least 16"),
    (dict(dash_length=0), "dash_length must be positive"),
])
def test_bad_options_raise(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_task("pathfinder", cache_dir=str(tmp_path), **kwargs)
