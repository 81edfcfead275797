"""Tests for nfhiql_core.data.dataset: OGBench layouts, validation errors, subsets, name resolution, and the
memory-mapped .npy layout with its conversion (`nfhiql dataset convert`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ogbench.utils import load_dataset as ogbench_load_dataset

import nfhiql_core.data.convert as convert_module
from nfhiql_core.checksums import sha256_file
from nfhiql_core.cli import main
from nfhiql_core.data.convert import convert_npz
from nfhiql_core.data.dataset import Dataset, dataset_sha256, load_dataset, read_manifest, resolve_dataset_path
from nfhiql_core.data.goal_sampler import GoalSamplerConfig, HierarchicalGoalSampler
from nfhiql_core.errors import DatasetError, OutputExistsError

TRAJ_LENS = (2, 7, 4, 10, 3)  # observations per trajectory, final one included


def raw_arrays(traj_lens=TRAJ_LENS, obs_dim: int = 3, act_dim: int = 2) -> dict[str, np.ndarray]:
    """Raw OGBench layout; observation column 0 is the trajectory id, column 1 the step."""
    ids = np.concatenate([np.full(n, i) for i, n in enumerate(traj_lens)])
    steps = np.concatenate([np.arange(n) for n in traj_lens])
    obs = np.random.default_rng(0).normal(size=(len(ids), obs_dim)).astype(np.float32)
    obs[:, 0], obs[:, 1] = ids, steps
    terminals = np.zeros(len(ids), dtype=np.float32)
    terminals[np.cumsum(traj_lens) - 1] = 1.0
    actions = np.random.default_rng(1).uniform(-1, 1, size=(len(ids), act_dim)).astype(np.float32)
    return {"observations": obs, "actions": actions, "terminals": terminals}


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def ogbench_final_goal_idxs(compact: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Valid indices and OGBench's trajectory-final goal index (GCDataset terminal_locs search)."""
    valid = np.nonzero(compact["valids"] > 0)[0]
    terminal_locs = np.nonzero(compact["terminals"] > 0)[0]
    return valid, terminal_locs[np.searchsorted(terminal_locs, valid)]


def test_raw_and_compact_files_match_ogbench(tmp_path):
    raw = raw_arrays()
    raw_path = write(tmp_path / "raw.npz", {**raw, "qpos": np.zeros((len(raw["terminals"]), 4))})
    compact = ogbench_load_dataset(str(raw_path), compact_dataset=True)
    compact_path = write(tmp_path / "compact.npz", compact)
    ref_valid, ref_goal = ogbench_final_goal_idxs(compact)

    for path in (raw_path, compact_path):
        ds = load_dataset(str(path))
        np.testing.assert_array_equal(ds.valid_indices, ref_valid)
        np.testing.assert_array_equal(ds.traj_ends[ds.valid_indices], ref_goal)
        np.testing.assert_array_equal(ds.observations, compact["observations"])
        np.testing.assert_array_equal(ds.actions, compact["actions"])
        assert ds.observations.dtype == np.float32 and ds.traj_ends.dtype == np.int64
        assert (len(ds), ds.obs_dim, ds.action_dim, ds.num_trajectories) == (26, 3, 2, 5)
        assert ds.source == str(path)
        assert not ds.observations.flags.writeable


def _mutate(arrays: dict, key: str, value) -> dict:
    return {**arrays, key: value}


def _set(array: np.ndarray, index: int, value: float) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


RAW = raw_arrays()
N = len(RAW["terminals"])
BAD_FILES = {
    "missing_key": ({k: v for k, v in RAW.items() if k != "actions"}, "actions"),
    "obs_ndim": (_mutate(RAW, "observations", RAW["observations"][:, 0]), "observations"),
    "terminals_ndim": (_mutate(RAW, "terminals", RAW["terminals"][:, None]), "terminals"),
    "actions_length": (_mutate(RAW, "actions", RAW["actions"][:-1]), "actions"),
    "valids_length": (_mutate(RAW, "valids", np.ones(N - 2, np.float32)), "valids"),
    "obs_nan": (_mutate(RAW, "observations", _set(RAW["observations"], 7, np.nan)), "observations"),
    "actions_inf": (_mutate(RAW, "actions", _set(RAW["actions"], 11, np.inf)), "actions"),
    "no_terminal": (_mutate(RAW, "terminals", np.zeros(N, np.float32)), "terminals"),
    "open_end": (_mutate(RAW, "terminals", _set(RAW["terminals"], N - 1, 0.0)), "terminals"),
    "empty_trajectory": (_mutate(RAW, "terminals", _set(RAW["terminals"], 0, 1.0)), "terminals"),
    "terminal_not_binary": (_mutate(RAW, "terminals", _set(RAW["terminals"], 3, 0.5)), "terminals"),
    "compact_inconsistent": (_mutate(RAW, "valids", 1.0 - RAW["terminals"]), "terminals"),
    "compact_open_end": (
        _mutate(RAW, "valids", _set(1.0 - RAW["terminals"], N - 1, 1.0)),
        "valids",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_one_line_error_naming_file_and_field(tmp_path, case):
    arrays, field = BAD_FILES[case]
    path = write(tmp_path / f"{case}.npz", arrays)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"'{field}'" in message


def test_nan_error_names_first_bad_index(tmp_path):
    obs = _set(_set(RAW["observations"], 9, np.inf), 7, np.nan)
    path = write(tmp_path / "nan.npz", _mutate(RAW, "observations", obs))
    with pytest.raises(DatasetError, match=r"'observations': NaN or Inf at index 7$"):
        load_dataset(str(path))


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_unreadable_or_non_npz_file(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is None:
        with path.open("wb") as f:
            np.save(f, np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match="npz") as err:
        load_dataset(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="not found") as err:
        load_dataset(str(tmp_path / "nope.npz"))
    assert "nope.npz" in str(err.value)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_data_fraction(tmp_path, fraction):
    path = write(tmp_path / "raw.npz", RAW)
    with pytest.raises(DatasetError, match="data_fraction") as err:
        load_dataset(str(path), data_fraction=fraction)
    assert str(path) in str(err.value)


def test_data_fraction_keeps_whole_seeded_trajectories(tmp_path):
    lens = np.random.default_rng(3).integers(2, 30, size=40)
    raw = raw_arrays(tuple(lens))
    path = write(tmp_path / "many.npz", raw)
    full = load_dataset(str(path))
    sub = load_dataset(str(path), data_fraction=0.25, seed=5)

    assert sub.num_trajectories == 10
    ids = sub.observations[:, 0].astype(int)
    kept = np.unique(ids)
    assert len(kept) == 10 and np.all(np.diff(ids) >= 0)  # original order
    for traj in kept:
        rows = ids == traj
        original = full.observations[full.observations[:, 0] == traj]
        np.testing.assert_array_equal(sub.observations[rows], original)
        np.testing.assert_array_equal(sub.observations[rows, 1], np.arange(lens[traj]))
        assert sub.traj_ends[rows][0] == np.flatnonzero(rows)[-1] - 1  # capped at its last valid index

    again = load_dataset(str(path), data_fraction=0.25, seed=5)
    other = load_dataset(str(path), data_fraction=0.25, seed=6)
    np.testing.assert_array_equal(again.observations, sub.observations)
    assert not np.array_equal(np.unique(other.observations[:, 0]), kept)
    assert load_dataset(str(path), data_fraction=1e-6).num_trajectories == 1


def test_name_resolution_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    data_dir = tmp_path / ".ogbench" / "data"
    data_dir.mkdir(parents=True)
    target = write(data_dir / "toy-navigate-v0.npz", RAW)

    assert resolve_dataset_path("toy-navigate-v0") == target
    assert resolve_dataset_path("toy-navigate") == target
    assert load_dataset("toy-navigate").source == str(target)
    with pytest.raises(DatasetError, match="not found"):
        resolve_dataset_path("other-navigate")


def test_from_arrays_leaves_caller_arrays_writable():
    raw = raw_arrays()
    ds = Dataset.from_arrays(**raw)
    assert raw["observations"].flags.writeable and not ds.observations.flags.writeable
    assert ds.source == "<arrays>"


# ------------------------------------------------------------------ the memory-mapped .npy layout
def test_row_lookups_equal_the_full_index_arrays():
    lens = tuple(np.random.default_rng(4).integers(2, 30, size=60))
    ds = Dataset.from_arrays(**raw_arrays(lens))
    k = np.arange(ds.num_valid)
    assert ds.num_valid == len(ds.valid_indices)
    np.testing.assert_array_equal(ds.nth_valid(k), ds.valid_indices)
    np.testing.assert_array_equal(ds.trajectory_ends(np.arange(len(ds))), ds.traj_ends)
    ids = ds.observations[:, 0]
    last_valid = {i: np.flatnonzero(ids == i)[-2] for i in np.unique(ids)}
    assert all(ds.traj_ends[j] == last_valid[ids[j]] for j in range(len(ds)))


@pytest.mark.parametrize("layout", ["raw", "compact"])
def test_converted_layout_is_memory_mapped_and_equal_to_the_npz(tmp_path, layout):
    raw = raw_arrays()
    arrays = raw if layout == "raw" else ogbench_load_dataset(str(write(tmp_path / "r.npz", raw)), compact_dataset=True)
    npz = write(tmp_path / f"{layout}.npz", arrays)
    out = tmp_path / "layout"
    converted = convert_npz(npz, out, progress=False)
    loaded, reference = load_dataset(str(out)), load_dataset(str(npz))
    for ds in (converted, loaded):
        assert isinstance(ds.observations.base, np.memmap) and not ds.observations.flags.writeable
        assert ds.source == str(out) and ds.observations.dtype == ds.actions.dtype == np.float32
        for key in ("observations", "actions", "valids", "traj_ends", "valid_indices"):
            np.testing.assert_array_equal(getattr(ds, key), getattr(reference, key))
    manifest = read_manifest(out)
    assert manifest["rows"] == len(reference) and manifest["trajectories"] == reference.num_trajectories
    assert manifest["source"] == {"path": str(npz), "sha256": sha256_file(npz)}
    assert {k: v["sha256"] for k, v in manifest["arrays"].items()} == \
           {k: sha256_file(out / f"{k}.npy") for k in ("observations", "actions", "valids")}
    assert dataset_sha256(out) == sha256_file(out / "dataset.json") and dataset_sha256(npz) == sha256_file(npz)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["layout", f"{layout}.npz", *(["r.npz"] * (
        layout == "compact"))])  # no staging directory left behind


def test_conversion_streams_in_chunks_and_keeps_fortran_order_arrays(tmp_path, monkeypatch):
    raw = raw_arrays()
    npz = write(tmp_path / "f.npz", {**raw, "observations": np.asfortranarray(raw["observations"])})
    monkeypatch.setattr(convert_module, "CHUNK_BYTES", 20)  # a few rows per chunk
    convert_npz(npz, tmp_path / "out", progress=False)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "out")).observations, raw["observations"])
    convert_npz(write(tmp_path / "c.npz", raw), tmp_path / "out2", progress=False)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "out2")).actions, raw["actions"])


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_conversion_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path, case):
    arrays, field = BAD_FILES[case]
    path = write(tmp_path / f"{case}.npz", arrays)
    with pytest.raises(DatasetError) as err:
        convert_npz(path, tmp_path / "out", progress=False)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"'{field}'" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    if case == "obs_nan":
        assert message.endswith("NaN or Inf at index 7")


def test_conversion_refuses_an_existing_output_unless_forced(tmp_path):
    npz, out = write(tmp_path / "raw.npz", RAW), tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        convert_npz(npz, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    convert_npz(npz, out, force=True, progress=False)
    assert not (out / "keep.txt").exists() and len(load_dataset(str(out))) == N


def _broken_layout(out: Path, case: str) -> str:
    """Damage a converted layout; the field its error must name."""
    if case == "no_manifest":
        (out / "dataset.json").unlink()
        return "dataset.json"
    if case == "bad_format":
        (out / "dataset.json").write_text(json.dumps({**read_manifest(out), "format": "other/1"}))
        return "'format'"
    if case == "missing_array":
        (out / "actions.npy").unlink()
        return "'actions'"
    if case == "wrong_dtype":
        np.save(out / "observations.npy", RAW["observations"].astype(np.float64))
        return "'observations'"
    if case == "wrong_rows":
        np.save(out / "valids.npy", np.ones(N - 1, bool))
        return "'valids'"
    if case == "not_npy":
        (out / "actions.npy").write_bytes(b"garbage")
        return "'actions'"
    np.save(out / "valids.npy", np.ones(N, bool))  # open_end: no trajectory ever ends
    return "'valids'"


@pytest.mark.parametrize("case", ["no_manifest", "bad_format", "missing_array", "wrong_dtype", "wrong_rows",
                                  "not_npy", "open_end"])
def test_bad_layout_directories_raise_one_line_errors(tmp_path, case):
    out = tmp_path / "layout"
    convert_npz(write(tmp_path / "raw.npz", RAW), out, progress=False)
    needle = _broken_layout(out, case)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(out))
    message = str(err.value)
    assert "\n" not in message and str(out) in message and needle in message, message


def test_sampling_a_converted_layout_draws_the_same_batches(tmp_path):
    npz = write(tmp_path / "many.npz", raw_arrays(tuple(np.random.default_rng(3).integers(2, 30, size=40))))
    convert_npz(npz, tmp_path / "layout", progress=False)
    batches = [HierarchicalGoalSampler(load_dataset(str(p)), GoalSamplerConfig(subgoal_steps=3)).sample(
        64, np.random.default_rng(9)) for p in (npz, tmp_path / "layout")]
    assert batches[0].keys() == batches[1].keys()
    for key in batches[0]:
        np.testing.assert_array_equal(batches[0][key], batches[1][key])


def test_dataset_convert_cli(tmp_path, capsys):
    npz, out = write(tmp_path / "raw.npz", RAW), tmp_path / "out"
    assert main(["dataset", "convert", str(npz), "-o", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dataset": str(out), "rows": N, "trajectories": len(TRAJ_LENS),
                                                   "obs_dim": 3, "action_dim": 2}
    assert main(["dataset", "convert", str(npz), "-o", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"nfhiql: error: {out}: already exists and is not empty (pass --force to " \
                                      "overwrite)\n"
