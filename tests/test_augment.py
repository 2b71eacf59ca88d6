"""Training augmentation: what each clip gets, and that it depends on (seed, epoch, clip) only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset import ClipDataset
from fatigue.data.augment import (CAMERA_JITTER, NO_AUGMENT, NOISE_MAX, augmentation_plan,
                                  to_model_input)


def reference(clip: np.ndarray, params) -> np.ndarray:
    """The augmentation written plainly, one clip at a time."""
    flip, dy, dx, contrast, brightness = params
    x = clip.astype(np.float64) / 255
    if flip > 0.5:
        x = x[..., ::-1]
    x = np.roll(x, (int(dy), int(dx)), axis=(-2, -1))
    mean = x.mean()
    return np.clip((x - mean) * contrast + mean + brightness, 0, 1)


@pytest.mark.parametrize("size", [7, 16])
def test_each_clip_gets_its_own_flip_shift_contrast_and_brightness(size):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (4, 3, 2, size, size), dtype=np.uint8)
    params = [(1.0, 2.0, -3.0, 1.2, 0.05), (0.0, -1.0, 1.0, 0.8, -0.1),
              (1.0, 0.0, 0.0, 1.0, 0.0), NO_AUGMENT]
    out = to_model_input(torch.from_numpy(clips), torch.tensor(params), size)
    assert out.shape == (4, 3, 2, size, size) and out.dtype == torch.float32
    for clip, p, got in zip(clips, params, out.numpy()):
        np.testing.assert_allclose(got, reference(clip, p), atol=1e-5)
    np.testing.assert_allclose(out[3].numpy(), clips[3] / 255, atol=1e-6)  # NO_AUGMENT: unchanged


def test_no_params_means_plain_scaling_and_resizing():
    clips = torch.randint(0, 256, (2, 3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(to_model_input(clips, None, 8), clips.float() / 255)
    resized = to_model_input(clips, torch.tensor([NO_AUGMENT] * 2), 12)
    assert resized.shape == (2, 3, 1, 12, 12)
    torch.testing.assert_close(resized, to_model_input(clips, None, 12), atol=1e-5, rtol=0)


def test_a_clips_draw_depends_on_seed_epoch_and_clip_only(tiny_data):
    def items(seed, epoch, order):
        data = ClipDataset(tiny_data, "train", 8, 16, 1, augment=True, seed=seed, raw=True)
        return {i: data[(i, epoch)] for i in order}

    n = len(ClipDataset(tiny_data, "train", 8, 16, 1))
    forward = items(3, 5, range(n))
    backward = items(3, 5, reversed(range(n)))  # another order, a fresh dataset
    for i in range(n):
        assert all(torch.equal(a, b) for a, b in zip(forward[i][:2], backward[i][:2]))
    params = torch.stack([forward[i][1] for i in range(n)])
    assert not torch.equal(params, torch.stack([items(3, 6, range(n))[i][1] for i in range(n)]))
    assert not torch.equal(params, torch.stack([items(4, 5, range(n))[i][1] for i in range(n)]))
    shift = max(1, round(0.06 * 16))
    assert params[:, 1:3].abs().max() <= shift and set(params[:, 0].tolist()) == {0.0, 1.0}


def test_evaluation_clips_are_centred_and_unaugmented(tiny_data):
    data = ClipDataset(tiny_data, "val", 8, 16, 1, augment=True, seed=3)
    clip, _ = data[0]  # no epoch: evaluation
    stored = np.asarray(data.clips[data.rows[0]])
    extra = stored.shape[0] - 8
    np.testing.assert_allclose(clip.numpy(), stored[extra // 2:extra // 2 + 8] / 255, atol=1e-6)


def test_a_clips_input_does_not_depend_on_the_rest_of_its_batch():
    # Resumed epochs and in-memory chunks group clips differently from an unbroken run.
    clips = torch.randint(0, 256, (48, 30, 1, 32, 32), dtype=torch.uint8)
    params = torch.tensor([(i % 2, i % 5 - 2, 2 - i % 3, 0.8 + i / 100, i / 500 - 0.05)
                           for i in range(48)], dtype=torch.float32)
    whole = to_model_input(clips, params, 32)
    for i in (0, 17, 47):
        assert torch.equal(to_model_input(clips[i:i + 1], params[i:i + 1], 32)[0], whole[i])
    assert torch.equal(to_model_input(clips[5:21], params[5:21], 32), whole[5:21])


def test_a_negative_seed_is_a_seed_like_any_other(tiny_data):
    data = ClipDataset(tiny_data, "train", 8, 16, 1, augment=True, seed=-1, raw=True)
    other = ClipDataset(tiny_data, "train", 8, 16, 1, augment=True, seed=1, raw=True)
    assert not torch.equal(data[(0, 0)][1], other[(0, 0)][1])


# ----------------------------------------------------------------------------- camera jitter
def test_camera_jitter_keeps_the_plan_and_is_fixed_by_seed_and_epoch():
    starts, plain = augmentation_plan(3, 5, 40, 6, 32)
    starts_j, jittered = augmentation_plan(3, 5, 40, 6, 32, camera=True)
    assert np.array_equal(starts, starts_j) and np.array_equal(plain, jittered[:, :5])
    assert jittered.shape == (40, 5 + len(CAMERA_JITTER))
    assert np.array_equal(jittered, augmentation_plan(3, 5, 40, 6, 32, camera=True)[1])
    assert not np.array_equal(jittered, augmentation_plan(3, 6, 40, 6, 32, camera=True)[1])
    scale, blur, noise = jittered[:, 5], jittered[:, 6], jittered[:, 7]
    assert 0.2 < np.mean(scale > 0) < 0.8 and 0.2 < np.mean(blur > 0) < 0.8
    assert 0.2 < np.mean(noise > 0) < 0.8 and noise.max() <= NOISE_MAX


def test_camera_jitter_changes_a_clip_alone_whatever_its_batch():
    rng = np.random.default_rng(1)
    clips = torch.from_numpy(rng.integers(0, 256, (4, 3, 1, 16, 16), dtype=np.uint8))
    base = [list(NO_AUGMENT)] * 4
    jitter = [[0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0.05, 7]]
    params = torch.tensor([b + j for b, j in zip(base, jitter)], dtype=torch.float32)
    out = to_model_input(clips, params, 16)
    plain = to_model_input(clips, torch.tensor(base, dtype=torch.float32), 16)
    assert torch.equal(out[0], plain[0])  # no jitter: the plain augmentation, bit for bit
    for k in (1, 2, 3):  # shrunk-and-enlarged, blurred, noisy: each one softer or rougher
        assert not torch.equal(out[k], plain[k])
    assert out[1].std() < plain[1].std() and out[2].std() < plain[2].std()
    noise = out[3] - plain[3]
    assert 0.03 < noise.std() < 0.07 and not torch.equal(noise[0], noise[1])  # per frame
    for k in range(4):  # the same clip alone gives the same result, bit for bit
        assert torch.equal(to_model_input(clips[k:k + 1], params[k:k + 1], 16)[0], out[k])
