"""TuSimple reading, UFLD targets and decoding, the UFLD model and losses, the synthetic
generator, and the lane task under SLR / ADMM pruning."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lane_fixtures import H, straight, write_label_file

from slr_prune.adapters.lane import LaneTask, parse_image_size
from slr_prune.data.synthetic_lanes import TEST_FILE, TRAIN_FILE, synthetic_tusimple_cache, write_synthetic_tusimple
from slr_prune.data.tusimple import (
    LabelFormatError,
    TuSimpleDataset,
    decode_lanes,
    default_row_anchors,
    lane_slots,
    prediction_records,
    read_labels,
    resample_lane,
    row_anchor_targets,
    segmentation_target,
    split_label_files,
)
from slr_prune.engine import TrainConfig, prune
from slr_prune.metrics.tusimple import evaluate_lanes
from slr_prune.models.ufld import UFLD, LossWeights, focal_loss, shape_loss, similarity_loss, ufld_loss
from slr_prune.spec import PruneSpec

CPU = torch.device("cpu")
STEP = 1279 / 99  # UFLD's TuSimple column cell: (1280 − 1) / (griding_num − 1)
# four lanes meeting near (640, 160): outer-left leaves the image on the left, outer-right on the right
OUTER_LEFT, EGO_LEFT = straight(-300, 600), straight(300, 620)
EGO_RIGHT, OUTER_RIGHT = straight(1000, 660), straight(1700, 680)


# ---- reading and its errors ---------------------------------------------------------------------
def test_read_labels_round_trip(tmp_path):
    record = {"raw_file": "clips/a/20.jpg", "lanes": [EGO_LEFT, EGO_RIGHT], "h_samples": H}
    path = write_label_file(tmp_path / "label_data_x.json", [record, record])
    labels = read_labels(path)
    assert len(labels) == 2 and labels[0].to_dict() == {**record, "lanes": [[float(x) for x in lane]
                                                                        for lane in record["lanes"]]}
    assert labels[1].source.endswith("label_data_x.json:2")
    assert split_label_files(tmp_path, "train") == [path]


def test_missing_label_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"label file '.*nowhere\.json' does not exist"):
        read_labels(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="no training labels label_data_"):
        split_label_files(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"test_label\.json' does not exist"):
        split_label_files(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="TuSimple root .* does not exist"):
        split_label_files(tmp_path / "absent", "test")
    with pytest.raises(FileNotFoundError, match=r"TuSimple root .* does not exist"):
        LaneTask(data=tmp_path / "absent", image_size=(64, 128), hidden=8)
    write_label_file(tmp_path / "label_data_a.json", [])
    with pytest.raises(FileNotFoundError, match=r"test_label\.json' does not exist"):
        LaneTask(data=tmp_path, image_size=(64, 128), hidden=8)
    write_label_file(tmp_path / "test_label.json", [])
    with pytest.raises(ValueError, match="image_size 64x100: UFLD needs both sides to be multiples of 32"):
        LaneTask(data=tmp_path, image_size=(64, 100), hidden=8)


def test_malformed_json_lines_name_the_line(tmp_path):
    good = json.dumps({"raw_file": "a.jpg", "lanes": [EGO_LEFT], "h_samples": H})
    path = tmp_path / "label.json"
    path.write_text(good + "\n\n" + good + "\n" + '{"raw_file": "b.jpg", "lanes": [\n')
    with pytest.raises(LabelFormatError, match=r"label\.json:4: malformed JSON"):
        read_labels(path)
    path.write_text(good + "\n[1, 2]\n")
    with pytest.raises(LabelFormatError, match=r"label\.json:2: expected a JSON object, got list"):
        read_labels(path)
    path.write_text(json.dumps({"raw_file": "a.jpg", "lanes": [EGO_LEFT]}) + "\n")
    with pytest.raises(LabelFormatError, match=r":1: missing h_samples"):
        read_labels(path)
    path.write_text(json.dumps({"raw_file": "a.jpg", "lanes": [["x"] * 56], "h_samples": H}) + "\n")
    with pytest.raises(LabelFormatError, match=r":1: lane 0 must be a list of numbers"):
        read_labels(path)


def test_lane_length_must_match_h_samples(tmp_path):
    path = write_label_file(tmp_path / "l.json", [
        {"raw_file": "a.jpg", "lanes": [EGO_LEFT], "h_samples": H},
        {"raw_file": "b.jpg", "lanes": [EGO_LEFT, [1, 2, 3]], "h_samples": H}])
    with pytest.raises(LabelFormatError, match=r"l\.json:2: lane 1 has 3 x values but h_samples has 56"):
        read_labels(path)


def test_missing_image_is_named(tmp_path):
    write_label_file(tmp_path / "test_label.json", [{"raw_file": "clips/x/20.jpg", "lanes": [], "h_samples": H}])
    with pytest.raises(FileNotFoundError, match=r"image 'clips/x/20\.jpg' \(.*test_label\.json:1\) is missing"):
        TuSimpleDataset(tmp_path, tmp_path / "test_label.json", input_size=(64, 128))


# ---- targets -----------------------------------------------------------------------------------
def test_lanes_take_their_slots_left_to_right():
    slots = lane_slots([EGO_RIGHT, OUTER_LEFT, OUTER_RIGHT, EGO_LEFT], H)
    assert [list(s) for s in slots] == [OUTER_LEFT, EGO_LEFT, EGO_RIGHT, OUTER_RIGHT]
    # three lanes on the left: the two nearest the car (steepest) are kept
    far_left = straight(-1200, 580)
    slots = lane_slots([far_left, EGO_LEFT, OUTER_LEFT], H)
    assert list(slots[0]) == OUTER_LEFT and list(slots[1]) == EGO_LEFT and slots[2] is None and slots[3] is None
    # a lane shorter than 90 px is dropped
    short = [-2] * 53 + [300, 290, 280]
    assert all(s is None for s in lane_slots([short], H))


def test_row_anchor_targets_are_column_cells():
    from slr_prune.data.tusimple import LaneLabel

    label = LaneLabel("a.jpg", [EGO_LEFT, EGO_RIGHT], [float(h) for h in H])
    anchors = default_row_anchors(56)
    assert anchors == [float(h) for h in H]
    target = row_anchor_targets(label, anchors)
    assert target.shape == (56, 4) and target.dtype == np.int64
    np.testing.assert_array_equal(target[:, 1], np.floor(np.array(EGO_LEFT) / STEP))
    np.testing.assert_array_equal(target[:, 2], np.floor(np.array(EGO_RIGHT) / STEP))
    assert (target[:, [0, 3]] == 100).all()  # empty slots: the "no lane" cell
    # fewer anchors: the lane is interpolated between labelled rows
    coarse = row_anchor_targets(label, [165.0, 435.0], griding_num=50)
    x = np.interp([165.0, 435.0], H, EGO_LEFT)
    np.testing.assert_array_equal(coarse[:, 1], np.floor(x / (1279 / 49)))


def test_short_lanes_are_extended_to_the_border():
    from slr_prune.data.tusimple import LaneLabel

    cut = [x if y <= 500 else -2 for x, y in zip(EGO_LEFT, H, strict=True)]
    label = LaneLabel("a.jpg", [cut], [float(h) for h in H])
    anchors = default_row_anchors(56)
    full = np.floor(np.array(EGO_LEFT) / STEP)
    extended = row_anchor_targets(label, anchors)[:, 1]
    assert np.abs(extended - full).max() <= 1  # the fitted line continues the lane (label x are rounded)
    plain = row_anchor_targets(label, anchors, extend=False)[:, 1]
    assert (plain[np.array(H) > 500] == 100).all()


def test_segmentation_target_draws_each_slot():
    from slr_prune.data.tusimple import LaneLabel

    label = LaneLabel("a.jpg", [EGO_LEFT, EGO_RIGHT], [float(h) for h in H])
    mask = segmentation_target(label, (36, 100))
    assert mask.shape == (36, 100) and set(np.unique(mask)) == {0, 2, 3}
    row = 35  # the bottom row: x = 300 and 1000 of 1280
    assert mask[row, round(300 * 100 / 1280)] == 2 and mask[row, round(1000 * 100 / 1280) - 1] == 3


def test_decoding_follows_the_rel_mode():
    logits = torch.full((1, 11, 2, 1), -50.0)  # griding_num 10
    logits[0, 3, 0, 0] = logits[0, 4, 0, 0] = 10.0  # half on cell 3, half on 4: location 3.5
    logits[0, 10, 1, 0] = 10.0  # "no lane"
    xs = decode_lanes(logits)
    assert xs[0, 0, 0].item() == round((3.5 + 0.5) * 1280 / 9) and xs[0, 1, 0].item() == -2


def test_resample_lane():
    assert resample_lane([100, 120, 140], [160, 180, 200], [160, 170, 180, 190, 200, 210]) == [
        100, 110, 120, 130, 140, -2]
    assert resample_lane([100, -2, 140], [160, 180, 200], [160, 170, 180, 200]) == [100, -2, -2, 140]
    assert resample_lane([100, 120], [160, 180], [160, 180]) == [100, 120]


def test_perfect_logits_score_full_accuracy(tmp_path):
    from slr_prune.data.tusimple import LaneLabel

    labels = [LaneLabel("a.jpg", [EGO_LEFT, EGO_RIGHT], [float(h) for h in H]),
              LaneLabel("b.jpg", [OUTER_LEFT, EGO_LEFT, EGO_RIGHT, OUTER_RIGHT], [float(h) for h in H])]
    anchors = default_row_anchors(56)
    targets = torch.stack([torch.from_numpy(row_anchor_targets(lb, anchors)) for lb in labels])
    logits = F.one_hot(targets, 101).permute(0, 3, 1, 2).float() * 30
    gts = [lb.to_dict() for lb in labels]
    records = prediction_records(logits, anchors, labels)
    assert all(len(r["lanes"]) == 4 and len(r["lanes"][0]) == 56 for r in records)
    scores = evaluate_lanes(records, gts)
    # UFLD reports every slot: image a has two empty slots, false positives (2/4 + 0) / 2
    assert scores["accuracy"] == 1.0 and scores["fn"] == 0.0 and scores["fp"] == pytest.approx(0.25)
    scores = evaluate_lanes(prediction_records(logits, anchors, labels, drop_empty=True), gts)
    assert (scores["accuracy"], scores["fp"], scores["fn"]) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="head has 56 row anchors, but 3"):
        prediction_records(logits, anchors[:3], labels)


# ---- model and losses ----------------------------------------------------------------------------
def test_ufld_reference_dimensions():
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        net = UFLD("18")  # the reference configuration: 288×800, TuSimple head
        x2, x3, x4 = net.model(torch.zeros(1, 3, 288, 800))
        cls, seg = net.train()(torch.zeros(2, 3, 288, 800))
    assert net.flat_dim == 1800 and net.cls[0].in_features == 1800 and net.cls[0].out_features == 2048
    assert net.cls_dim == (101, 56, 4) and net.cls[2].out_features == 22624
    assert net.pool.in_channels == 512 and net.pool.out_channels == 8
    assert x2.shape[1:] == (128, 36, 100) and x3.shape[1:] == (256, 18, 50) and x4.shape[1:] == (512, 9, 25)
    assert cls.shape == (2, 101, 56, 4) and seg.shape == (2, 5, 36, 100)
    names = [n for n, _ in net.named_parameters()]
    assert names[0] == "model.conv1.weight" and "aux_header2.0.conv.weight" in names
    assert names.index("cls.0.weight") < names.index("pool.weight")  # pool is the last prunable layer


def test_ufld_outputs_and_errors():
    net = UFLD("18", griding_num=10, num_row_anchors=6, input_size=(32, 64), hidden=16)
    x = torch.randn(2, 3, 32, 64)
    cls, seg = net(x)
    assert cls.shape == (2, 11, 6, 4) and seg.shape == (2, 5, 4, 8)
    net.eval()
    assert net(x).shape == (2, 11, 6, 4)
    assert isinstance(UFLD("18", use_aux=False, input_size=(32, 64), hidden=4).train()(x), torch.Tensor)
    assert len(UFLD("34", input_size=(32, 64), hidden=4).model.layer3) == 6
    with pytest.raises(ValueError, match="multiples of 32"):
        UFLD(input_size=(100, 800))
    with pytest.raises(ValueError, match="backbone '50' is not supported; choose one of 18, 34"):
        UFLD("50")
    with pytest.raises(ValueError, match=r"built for inputs of size \(32, 64\)"):
        net(torch.randn(1, 3, 64, 128))


def test_losses_against_hand_values():
    logits = torch.zeros(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert focal_loss(logits, target).item() == pytest.approx(0.25 * math.log(2))  # (1 − ½)² · log 2
    rand, t = torch.randn(3, 5, 4, 2), torch.randint(0, 5, (3, 4, 2))
    assert focal_loss(rand, t, gamma=0).item() == pytest.approx(F.cross_entropy(rand, t).item(), rel=1e-6)
    rows = torch.tensor([0.0, 3.0]).view(1, 1, 2, 1)  # adjacent-row difference 3: smooth-L1 = 3 − ½
    assert similarity_loss(rows).item() == pytest.approx(2.5)
    assert similarity_loss(torch.ones(2, 5, 4, 3)).item() == 0.0
    # expected cells 0, 1, 2, 4, 5, ...: first differences −1, −1, −2, −1 → |second| 0, 1, 1 → mean 2/3
    cells = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8])
    peaked = F.one_hot(cells, 10).T.float().view(1, 10, 8, 1) * 60
    assert shape_loss(peaked).item() == pytest.approx(2 / 3, abs=1e-4)
    straight_cells = F.one_hot(torch.arange(8), 10).T.float().view(1, 10, 8, 1) * 60
    assert shape_loss(straight_cells).item() == pytest.approx(0.0, abs=1e-4)
    seg, seg_t = torch.randn(3, 5, 4, 6), torch.randint(0, 5, (3, 4, 6))
    parts = ufld_loss((rand, seg), t, seg_t)
    assert set(parts) == {"loss", "cls", "sim", "aux"}  # shape weight 0 in the TuSimple config
    expected = focal_loss(rand, t) + similarity_loss(rand) + F.cross_entropy(seg, seg_t)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert "aux" not in ufld_loss(rand, t, seg_t)
    with_shape = ufld_loss(rand, t, weights=LossWeights.from_any({"shp": 1.0}))
    assert with_shape["loss"].item() == pytest.approx((parts["cls"] + parts["sim"] + with_shape["shp"]).item())
    with pytest.raises(ValueError, match="unknown UFLD loss weights"):
        LossWeights.from_any({"seg": 1.0})


# ---- synthetic data --------------------------------------------------------------------------------
def test_synthetic_dataset_is_valid_tusimple(tmp_path):
    from PIL import Image

    root = write_synthetic_tusimple(tmp_path, num_train=6, num_test=3, image_size=(90, 160), seed=1)
    train, test = read_labels(root / TRAIN_FILE), read_labels(root / TEST_FILE)
    assert len(train) == 6 and len(test) == 3
    for label in train + test:
        assert 2 <= len(label.lanes) <= 4 and label.h_samples == [float(h) for h in H]
        assert sum(s is not None for s in lane_slots(label.lanes, label.h_samples)) == len(label.lanes)
        assert all(x == -2 or 0 <= x <= 1279 for lane in label.lanes for x in lane)
        with Image.open(root / label.raw_file) as im:
            assert im.size == (160, 90)
    again = write_synthetic_tusimple(tmp_path / "again", num_train=6, num_test=3, image_size=(90, 160), seed=1)
    assert (again / TRAIN_FILE).read_text() == (root / TRAIN_FILE).read_text()  # seeded


def test_parse_image_size():
    assert parse_image_size(800, (1, 1)) == (288, 800)
    assert parse_image_size(256, (1, 1)) == (96, 256)
    assert parse_image_size("64x160", (1, 1)) == (64, 160)
    assert parse_image_size([64, 128], (1, 1)) == (64, 128)
    assert parse_image_size(None, (96, 256)) == (96, 256)
    with pytest.raises(ValueError, match="is not a width like 800 or 'HxW'"):
        parse_image_size("big", (1, 1))


# ---- the task under the solvers ---------------------------------------------------------------------
@pytest.mark.slow
def test_lane_task_generates_data_and_prunes_with_slr_and_admm(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.setenv("SLR_PRUNE_CACHE", str(tmp_path))
    torch.manual_seed(0)
    options = {"image_size": (32, 64), "hidden": 16, "num_row_anchors": 8, "griding_num": 20,
               "batch_size": 4, "synthetic": (4, 2)}
    task = LaneTask(**options)
    assert "generating a synthetic TuSimple-format dataset (4 train / 2 test images)" in capsys.readouterr().out
    LaneTask(**options)
    assert "using the synthetic TuSimple-format data" in capsys.readouterr().out
    assert synthetic_tusimple_cache(4, 2, verbose=False) == task.root
    with pytest.raises(ValueError, match="unknown lane model 'vgg'"):
        LaneTask(model="vgg", **options)
    with pytest.raises(ValueError, match="reads TuSimple only"):
        LaneTask(dataset="culane", **options)

    model = task.build_model()
    dense = task.evaluate(model, CPU)
    assert set(dense) == {"accuracy", "fp", "fn"} and all(0 <= v <= 1 for v in dense.values())
    assert task.record()["image_size"] == [32, 64]
    spec = PruneSpec.uniform(0.6, exclude=list(task.default_exclude))
    train = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, device="cpu", progress=False)
    tune = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, device="cpu", progress=False)
    for method, opts in (("slr", {"rho": 0.1}), ("admm", {"rho": 0.1})):
        pruned = copy.deepcopy(model)
        result = prune(pruned, task, spec, method, train=train, finetune=tune, solver_options=opts,
                       dense_metrics=dense)
        assert set(result.hard_prune) == {"accuracy", "fp", "fn"}
        assert {"hard_prune_accuracy", "hard_prune_bn_accuracy"} <= set(result.epochs[0])
        assert set(result.hard_prune_bn) == {"accuracy", "fp", "fn"} and result.bn_batches > 0
        assert result.sparsity == pytest.approx(0.6, abs=1e-3)
        assert result.finetuned is not None and 0 <= result.finetuned["accuracy"] <= 1
        w = dict(pruned.named_parameters())
        zeros = float((w["cls.2.weight"] == 0).float().mean())
        assert zeros >= 0.6 - 1e-3  # the masks held through fine-tuning
        assert float((w["aux_combine.0.conv.weight"] == 0).float().mean()) < 0.01  # aux stays dense
