"""Memorisation figures: every series and the threshold are drawn; panels carry their labels."""

from __future__ import annotations

import numpy as np

from galaxy_core.metrics.memorisation_figures import SERIES_COLOURS, distance_histogram, labelled_matches


def test_histogram_has_three_outlined_series_and_the_threshold():
    rng = np.random.default_rng(0)
    fig = distance_histogram(rng.uniform(0, 1, 50), rng.uniform(0.5, 1.5, 40), rng.uniform(0.4, 1.2, 30),
                             threshold=0.6, title="t", x_title="1 − cos")
    names = [t.name for t in fig.data]
    assert names == ["generated → nearest training (n=50)", "held-out real → nearest training (n=40)",
                     "training → nearest other training (n=30)"]
    assert [t.line.color for t in fig.data] == list(SERIES_COLOURS.values())
    for t in fig.data:  # densities integrate to one over the shared bins
        x, y = np.asarray(t.x), np.asarray(t.y)
        assert abs(np.sum(np.diff(x)[::2] * y[::2]) - 1) < 1e-9
    assert fig.layout.shapes[0].x0 == 0.6 and "suspect threshold 0.6" in fig.layout.annotations[0].text
    no_held = distance_histogram([0.1, 0.2], None, [0.3, 0.4], threshold=None, title="t", x_title="x")
    assert len(no_held.data) == 2 and not no_held.layout.shapes


def test_panel_size_and_flag_colours():
    gen = np.zeros((2, 8, 8, 3), np.uint8)
    train = np.full((2, 3, 8, 8, 3), 255, np.uint8)
    img = labelled_matches(gen, train, gen_labels=["generated #0", "generated #1"],
                           train_labels=[["a.png", "b.png", "c.png"]] * 2, distances=np.ones((2, 3)),
                           flagged=np.array([True, False]), header="cosine", tile=40)
    assert img.shape == (8 + 17 + 2 * (40 + 34 + 6) + 6, 4 * 46 + 6, 3) and img.dtype == np.uint8
    assert tuple(img[8 + 17, 6]) == (255, 110, 90)  # the suspect's frame is red
    assert tuple(img[8 + 17 + 80, 6]) == (150, 220, 150)  # the other one's is green
    assert tuple(img[8 + 17 + 20, 6 + 46 + 20]) == (255, 255, 255)  # a training tile
