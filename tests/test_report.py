"""The sweep report, on a synthetic sweep directory with known numbers."""
import base64
import io
import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from gru_sweep import report

SEQ_LENS = (10, 30)
RATES = {"default": 0.5, "chrono": 0.05}  # decay rate of ||dL/dh_t|| per step, seed 0
SEEDS = (0, 1)
DIVERGED = ("default", 30, 1)


def rate(gate_init, seed):
    return RATES[gate_init] * (1 + 0.2 * seed)


def final_loss(gate_init, seq_len, seed):
    return 0.01 * seq_len + 0.02 * seed + (0.05 if gate_init == "default" else 0.0)


def baseline(seq_len):
    return 10 * math.log(8) / (seq_len + 20)


def write_gradnorms(run_dir, seq_len, decay, diverged):
    rows = []
    for step in (0, 20, 40):
        for t in range(seq_len):
            norm = math.exp(-decay * (seq_len - 1 - t))
            rows.append({"step": step, "layer": 0, "t": t,
                         "grad_norm": np.nan if diverged and step == 40 else norm,
                         "cell_grad_norm": np.nan, "z_mean": 0.5 + 0.4 * t / seq_len,
                         "z_hi": 0.3, "z_lo": 0.05, "r_mean": 0.5, "r_hi": 0.1, "r_lo": 0.2})
    pd.DataFrame(rows).to_csv(run_dir / "gradnorms.csv", index=False)


def make_sweep(root, axes=("data.seq_len", "cell.name", "gate_init.scheme", "seed")):
    """2 seq_len x 2 gate_init x 2 seeds; one trial diverged; run_dir relative or stale.

    Besides the axes, summary.csv has the bookkeeping columns the sweep writes (step, node_ip,
    attempts, error, ...), varying, and the run directories a config.yaml: neither is an axis.
    """
    sweep = root / "sweep"
    rows = []
    for seq_len in SEQ_LENS:
        for gate_init in RATES:
            for seed in SEEDS:
                name = f"trial_{gate_init}_T{seq_len}_s{seed}"
                run_dir = sweep / "trials" / name
                run_dir.mkdir(parents=True)
                diverged = (gate_init, seq_len, seed) == DIVERGED
                loss = np.nan if diverged else final_loss(gate_init, seq_len, seed)
                write_gradnorms(run_dir, seq_len, rate(gate_init, seed), diverged)
                (run_dir / "config.yaml").write_text(yaml.safe_dump({
                    "seed": seed, "data": {"name": "copy", "seq_len": seq_len},
                    "cell": {"name": "custom_gru", "hidden_size": 8},
                    "gate_init": {"scheme": gate_init}}))
                (run_dir / "summary.json").write_text(json.dumps({
                    "status": "diverged" if diverged else "completed", "task": "copy",
                    "cell": "custom_gru", "gate_init": gate_init, "seq_len": seq_len,
                    "seed": seed, "monitor": "loss", "final": {"val/loss": loss},
                    "baseline": {"loss": baseline(seq_len)}, "steps": 40,
                    "run_dir": str(run_dir)}))
                # a stale absolute path (sweep copied elsewhere) must still be found by name
                stored = f"trials/{name}" if seed == 0 else f"/elsewhere/trials/{name}"
                rows.append({"trial_id": name, "status": "diverged" if diverged else "completed",
                             "data.seq_len": seq_len, "cell.name": "custom_gru",
                             "gate_init.scheme": gate_init, "gate_init": gate_init,
                             "seed": seed, "rep": seed, "val/loss": loss,
                             "val/loss_rel_baseline": loss / baseline(seq_len),
                             "test/loss": loss, "step": 20 if diverged else 40,
                             "node_ip": f"127.0.0.{seed + 1}", "attempts": 1 + seed,
                             "time_total_s": 10.0 + len(rows), "run_dir": stored,
                             "error": ""})
    frame = pd.DataFrame(rows)
    keep = ["trial_id", "status", *axes, "val/loss", "val/loss_rel_baseline", "test/loss",
            "step", "node_ip", "attempts", "time_total_s", "run_dir", "error"]
    frame[keep].to_csv(sweep / "summary.csv", index=False)
    return sweep


def append_trial(sweep_dir, row):
    """Add a summary.csv row without a run directory (a crashed or skipped trial)."""
    summary = pd.read_csv(sweep_dir / "summary.csv")
    pd.concat([summary, pd.DataFrame([row])]).to_csv(sweep_dir / "summary.csv", index=False)


def embedded_pngs(page):
    return [base64.b64decode(data, validate=True)
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def written(sweep_dir):
    return report.write_report(sweep_dir)


def test_report_embeds_every_figure_as_a_valid_png(written, sweep_dir):
    assert written == sweep_dir / "report.html"
    page = written.read_text(encoding="utf-8")
    files = sorted((sweep_dir / "figures").glob("*.png"))
    assert [f.name for f in files] == ["final_metrics.png", "gate_stats_seq_len_10.png",
                                       "gate_stats_seq_len_30.png", "gradnorm_curves.png"]
    images = embedded_pngs(page)
    assert sorted(images) == sorted(f.read_bytes() for f in files)
    for data in images:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 300
    assert "<img" in page and 'src="http' not in page and "<script" not in page


def test_report_lists_every_trial_and_highlights_the_diverged_one(written, sweep_dir):
    page = written.read_text(encoding="utf-8")
    trial_ids = pd.read_csv(sweep_dir / "summary.csv")["trial_id"]
    for trial_id in trial_ids:
        assert trial_id in page
    diverged_rows = re.findall(r'<tr class="diverged">(.*?)</tr>', page)
    # one row in the per-trial decay table, one in the summary table
    assert len(diverged_rows) == 2
    assert all("trial_default_T30_s1" in row for row in diverged_rows)
    assert page.count('<tr class="completed">') == 2 * (len(trial_ids) - 1)


def test_decay_table_recovers_each_trials_rate(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    decay = report.decay_table(sweep).set_index("trial_id")
    assert len(decay) == 8
    for trial_id, row in decay.iterrows():
        gate_init, seq_len, seed = row["config"].split(" · ")[-1], row["x"], row["seed"]
        expected = rate(gate_init, seed)
        assert row["slope"] == pytest.approx(-expected, abs=1e-6)
        assert row["fit_horizon"] == pytest.approx(math.log(1e3) / expected, rel=1e-6)
        reach = math.log(1e3) / expected
        if reach < seq_len - 1:
            assert row["horizon"] == math.floor(reach) + 1
        else:
            assert math.isnan(row["horizon"])
        # the diverged trial is fitted at its last usable probe
        assert row["step"] == (20 if trial_id == "trial_default_T30_s1" else 40)


def test_seed_aggregate_leaves_diverged_trials_out(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    assert sweep.x_axis == "data.seq_len"
    assert sweep.configs == ["custom_gru · chrono", "custom_gru · default"]
    assert sweep.metrics == ["val/loss", "val/loss_rel_baseline"]
    agg = report.seed_aggregate(sweep, sweep.trials["val/loss"]).set_index(["config", "x"])
    for gate_init in RATES:
        for seq_len in SEQ_LENS:
            row = agg.loc[(f"custom_gru · {gate_init}", seq_len)]
            seeds = [s for s in SEEDS if (gate_init, seq_len, s) != DIVERGED]
            losses = [final_loss(gate_init, seq_len, s) for s in seeds]
            assert row["mean"] == pytest.approx(np.mean(losses), abs=1e-12)
            assert row["n"] == len(seeds) and row["trials"] == 2
            assert row["diverged"] == 2 - len(seeds)
            if len(seeds) > 1:
                assert row["std"] == pytest.approx(np.std(losses, ddof=1), abs=1e-12)


def test_results_table_reads_means_and_baselines(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    table = report.results_table(sweep, report.decay_table(sweep))
    row = table[(table["config"] == "custom_gru · chrono") & (table["seq_len"] == 10)].iloc[0]
    assert row["val/loss"] == f"{0.11:.4g} ± {np.std([0.1, 0.12], ddof=1):.4g} (2)"
    assert row["horizon"] == "not reached"
    assert row["slope (ln/step)"] == f"{-0.055:.4g} ± {np.std([0.05, 0.06], ddof=1):.4g} (2)"
    assert row["fit horizon"] == f"{math.log(1e3) / 0.055:.4g}"
    fig = report.final_metrics_figure(sweep)
    baseline_line = next(line for line in fig.axes[0].lines
                         if line.get_label() == "task baseline")
    np.testing.assert_allclose(baseline_line.get_ydata(), [baseline(T) for T in SEQ_LENS])


def test_missing_axis_columns_fall_back_to_what_varies(tmp_path):
    # no seq_len, cell or gate_init columns: cell and gate_init come from summary.json,
    # seq_len varies but is not an axis of summary.csv, so the x axis is it via summary.json
    sweep_dir = make_sweep(tmp_path / "a", axes=("seed",))
    sweep = report.load_sweep(sweep_dir)
    assert sweep.x_axis == "seq_len"
    assert sweep.configs == ["custom_gru · chrono", "custom_gru · default"]
    assert report.write_report(sweep_dir).is_file()
    # nothing but the seed varies: configurations side by side, still a full page
    summary = pd.read_csv(sweep_dir / "summary.csv")
    summary = summary[summary["trial_id"].str.contains("chrono_T10")]
    summary.to_csv(sweep_dir / "summary.csv", index=False)
    sweep = report.load_sweep(sweep_dir)
    assert sweep.x_axis is None and sweep.configs == ["custom_gru · chrono"]
    page = report.write_report(sweep_dir).read_text(encoding="utf-8")
    assert len(embedded_pngs(page)) == 3


def test_sweep_summary_format_with_group_axes_and_repeats(tmp_path):
    # what gru_sweep.sweep_summary writes: group choices as axes, repeats of the grid as "rep"
    sweep = report.load_sweep(make_sweep(tmp_path, axes=("data.seq_len", "gate_init", "rep")))
    assert sweep.x_axis == "data.seq_len" and sweep.replicates == ["seed", "rep"]
    assert sweep.config_axes == ["cell", "gate_init"]
    assert sweep.configs == ["custom_gru · chrono", "custom_gru · default"]
    agg = report.seed_aggregate(sweep, sweep.trials["val/loss"])
    assert list(agg["n"]) == [2, 2, 2, 1]


def test_cli_writes_the_report(sweep_dir, capsys):
    assert report.main([str(sweep_dir)]) == 0
    assert str(sweep_dir / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_dir", "no_summary"])
def test_cli_fails_clearly_without_a_sweep(tmp_path, case):
    target = tmp_path / "nope" if case == "missing_dir" else tmp_path
    result = subprocess.run([sys.executable, "-m", "gru_sweep.report", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    expected = "is not a directory" if case == "missing_dir" else "summary.csv not found"
    assert expected in result.stderr and str(target) in result.stderr


def test_errored_trials_and_empty_summaries_still_give_a_page(tmp_path):
    sweep_dir = make_sweep(tmp_path / "a")
    append_trial(sweep_dir, {"trial_id": "trial_crashed", "status": "error", "data.seq_len": 30,
                             "cell.name": "custom_gru", "gate_init.scheme": "chrono", "seed": 2})
    page = report.write_report(sweep_dir).read_text(encoding="utf-8")
    row = re.search(r'<tr class="other">(.*?)</tr>', page).group(1)
    assert "trial_crashed" in row and ">error<" in row
    (sweep_dir / "summary.csv").write_text("")  # a sweep before its first trial ends
    assert "<p>0 trials." in report.write_report(sweep_dir).read_text(encoding="utf-8")


def _legend_labels(fig):
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_colour_per_cell_and_line_style_per_gate_init(tmp_path):
    # a second cell: two cells x two inits = four configurations, two colours, two styles
    sweep_dir = make_sweep(tmp_path / "a")
    summary = pd.read_csv(sweep_dir / "summary.csv")
    lstm = summary.assign(**{"cell.name": "lstm",
                             "trial_id": summary["trial_id"] + "_lstm"})
    pd.concat([summary, lstm]).to_csv(sweep_dir / "summary.csv", index=False)
    sweep = report.load_sweep(sweep_dir)
    styles = sweep.styles
    assert len(styles) == 4
    for init in RATES:
        assert styles[f"custom_gru · {init}"]["color"] != styles[f"lstm · {init}"]["color"]
        assert styles[f"custom_gru · {init}"]["linestyle"] == styles[f"lstm · {init}"]["linestyle"]
    for cell in ("custom_gru", "lstm"):
        chrono, default = styles[f"{cell} · chrono"], styles[f"{cell} · default"]
        assert chrono["color"] == default["color"]
        assert chrono["linestyle"] != default["linestyle"]
        assert chrono["marker"] != default["marker"]
    # the figure draws them so: each configuration's errorbar line has its own style
    fig = report.final_metrics_figure(sweep)
    drawn = {bars.get_label(): bars.lines[0] for bars in fig.axes[0].containers}
    for config, style in styles.items():
        assert drawn[config].get_marker() == style["marker"]
        assert drawn[config].get_color() == style["color"]
        assert drawn[config].get_linestyle() != "--"  # the baseline's
        assert drawn[config].get_linestyle() == style["linestyle"]  # "-" and "-." here
    # the gradient-norm curves carry the same styles
    curves = {line.get_label(): line for line in report.gradnorm_curves_figure(sweep).axes[0].lines}
    for config, style in styles.items():
        assert curves[config].get_color() == style["color"]
        assert curves[config].get_linestyle() == style["linestyle"]


def test_every_configuration_has_its_own_colour_beyond_ten(tmp_path):
    # twelve learning rates for one (cell, gate_init): tab10 would repeat colours
    sweep_dir = make_sweep(tmp_path / "a")
    summary = pd.read_csv(sweep_dir / "summary.csv")
    summary = summary[summary["gate_init.scheme"] == "chrono"]
    frames = [summary.assign(**{"optimizer.lr": 10.0 ** -k,
                                "trial_id": summary["trial_id"] + f"_lr{k}"})
              for k in range(12)]
    pd.concat(frames).to_csv(sweep_dir / "summary.csv", index=False)
    for run in (sweep_dir / "trials").iterdir():  # optimizer.lr must be a config key
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "optimizer": {"lr": 1.0}}))
    sweep = report.load_sweep(sweep_dir)
    assert len(sweep.configs) == 12
    colors = {tuple(style["color"]) for style in sweep.styles.values()}
    assert len(colors) == 12


def test_skipped_configurations_get_no_legend_entry(tmp_path):
    sweep_dir = make_sweep(tmp_path / "a")
    append_trial(sweep_dir, {"trial_id": "skipped_0", "status": "skipped", "data.seq_len": 30,
                             "cell.name": "lstm", "gate_init.scheme": "chrono", "seed": 0})
    sweep = report.load_sweep(sweep_dir)
    assert "lstm · chrono" in sweep.configs
    labels = _legend_labels(report.final_metrics_figure(sweep))
    assert "lstm · chrono" not in labels
    assert {"custom_gru · chrono", "custom_gru · default", "task baseline"} <= set(labels)


def test_trials_without_summary_json_keep_their_configuration(tmp_path):
    # cell is not an axis (it comes from each run), and one trial stopped before summary.json:
    # its cell is read from config.yaml, so it joins its configuration instead of making one
    sweep_dir = make_sweep(tmp_path / "a", axes=("data.seq_len", "gate_init.scheme", "seed"))
    summary = pd.read_csv(sweep_dir / "summary.csv")
    stopped = summary["trial_id"] == "trial_chrono_T30_s1"
    summary.loc[stopped, "status"] = "stopped"
    summary.to_csv(sweep_dir / "summary.csv", index=False)
    (sweep_dir / "trials" / "trial_chrono_T30_s1" / "summary.json").unlink()
    sweep = report.load_sweep(sweep_dir)
    assert sweep.configs == ["custom_gru · chrono", "custom_gru · default"]
    # and a trial with no run directory at all gets a style too ("?" for what it lacks)
    append_trial(sweep_dir, {"trial_id": "lost", "status": "error", "data.seq_len": 30,
                             "gate_init.scheme": "uniform", "seed": 0})
    sweep = report.load_sweep(sweep_dir)
    assert "uniform" in sweep.configs and len(sweep.styles) == 3
    assert report.write_report(sweep_dir).is_file()


def test_horizons_use_the_runs_own_horizon_fraction(tmp_path):
    # probe.horizon_fraction=0.01 in every run: the report's horizons are the ones the probe
    # logged, ln(100)/rate steps back, not the default's ln(1000)/rate
    sweep_dir = make_sweep(tmp_path / "a")
    for run in (sweep_dir / "trials").iterdir():
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "probe": {"horizon_fraction": 0.01}}))
    sweep = report.load_sweep(sweep_dir)
    assert sweep.threshold == 0.01
    decay = report.decay_table(sweep).set_index("trial_id")
    row = decay.loc["trial_default_T30_s0"]
    assert row["fit_horizon"] == pytest.approx(math.log(100) / rate("default", 0), rel=1e-6)
    assert row["horizon"] == math.floor(math.log(100) / rate("default", 0)) + 1
    assert "falls below 0.01 of its maximum" in report.write_report(sweep_dir).read_text()
