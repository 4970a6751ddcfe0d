"""The documentation keeps up with the code: docments on the public API, the README's example and commands."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from fastcore.docments import docments

import fastgr

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", fastgr.__all__)
def test_public_api_has_docments(name):
    obj = getattr(fastgr, name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) or name == "GRTerms":
        return
    assert inspect.getdoc(obj), f"{name} has no docstring"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = [name for name, p in inspect.signature(target).parameters.items()
              if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__"):
        return  # dataclass fields carry their comments in the class body
    docs = docments(target)
    missing = [p for p in params if not docs.get(p)]
    assert not missing, f"{name}: parameters without a docments comment: {missing}"


def test_readme_python_example_runs(monkeypatch):
    import fastai.callback.schedule  # noqa: F401  (fastai patches fit_one_cycle onto Learner there)
    from fastai.learner import Learner

    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    calls = []
    original = Learner.fit_one_cycle

    def short(self, n_epoch, *args, **kwargs):  # the example's schedule, cut to two epochs
        calls.append(n_epoch)
        with self.no_bar(), self.no_logging():
            return original(self, 2, *args, **kwargs)

    monkeypatch.setattr(Learner, "fit_one_cycle", short)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    learn = namespace["learn"]
    assert calls and len(learn.recorder.values) == 2
    assert any(type(cb).__name__ == "GRCallback" for cb in learn.cbs)


def test_readme_commands_are_what_ci_runs():
    "The README's check command is what .ci/run runs, and it runs the tests, notebooks, docs, package and floors."
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tools/check.sh" in README and "bash tools/check.sh" in ci and "uv run fastgr train" in README
    check = (ROOT / "tools" / "check.sh").read_text()
    for step in ("uv run pytest", "uv run nbdev-test nbs", "uv run mkdocs build --strict", "twine check --strict",
                 "--resolution lowest-direct", "--build-constraint"):
        assert step in check, step
    lowest = re.search(r"\.lowest/bin/python -m pytest -q (.*?)\n(?!\s)", check.replace("\\\n", " "), re.S).group(1)
    for test in lowest.split():
        assert (ROOT / test).is_file(), test


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    "A markdown table's body rows as {(first cell, second cell): the other cells}."
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {tuple(r[:2]): r[2:] for r in rows[1:]}


def _bench_module(name: str):
    "bench/NAME.py as a module (bench/ is not a package)."
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep_module():
    return _bench_module("budget_sweep")


def _sweep_table() -> str:
    "The results table `bench/budget_sweep.py --table` prints from bench/results/budget_sweep.json."
    import json

    return _sweep_module().table(json.loads((ROOT / "bench" / "results" / "budget_sweep.json").read_text())["rows"])


def test_benchmarks_results_table_is_the_raw_results():
    "Every figure of BENCHMARKS.md's results table that bench/results/budget_sweep.json holds is the one it holds."
    generated = _table(_sweep_table())
    section = (ROOT / "BENCHMARKS.md").read_text().split("## Results across methods")[1].split("\n## ")[0]
    documented = _table(section[section.index("\n| case |"):].split("\n\n")[0])
    assert documented.keys() == generated.keys()
    checked = 0
    for key, cells in generated.items():
        for shown, cell in zip(documented[key], cells, strict=True):
            if cell == "-" or shown.startswith("="):  # not run, or a pointer to the same run in another column
                continue
            figures = re.match(r"\**(\d\.\d{3})\**\s*\((\d\.\d{3})\)", shown)
            assert figures and " ".join(figures.groups()) == cell.replace("(", "").replace(")", ""), (key, shown, cell)
            checked += 1
    assert checked >= 70  # 72 when written


# The README's results table names its rows in words; these are the rows of BENCHMARKS.md's (and --table's) they copy.
README_ROWS = {
    "digits (sklearn), ResNet-20 at 16x16, 30 epochs": ("digits, 40% symmetric", "30"),
    **{f"CIFAR-10, 5,000-image subset, ResNet-20, {n} epochs": ("CIFAR-5k, 40% symmetric", str(n))
       for n in (10, 20, 30, 40, 120)},
    "CIFAR-10, 5,000-image subset, 30% pairflip, 120 epochs": ("CIFAR-5k, 30% pairflip", "120"),
    "CIFAR-10N random_label1 (17.5% human noise) on the same subset, 120 epochs":
        ("CIFAR-10N random_label1 (17.5% wrong) on CIFAR-5k", "120"),
    "CIFAR-10N aggre_label (9.2% human noise) on the same subset, 120 epochs":
        ("CIFAR-10N aggre_label (9.2% wrong) on CIFAR-5k", "120"),
    **{f"CIFAR-10, 5,000-image subset, clean labels, {n} epochs": ("CIFAR-5k, clean labels", str(n))
       for n in (40, 120)},
    **{f"fine-tune: ResNet-20 pretrained on CIFAR-10's classes 0-4, 5,000 images of classes 5-9, {n} epochs":
       ("fine-tune, 40% symmetric", str(n)) for n in (5, 10, 20)},
    "the same fine-tune, clean labels, 5 epochs": ("fine-tune, clean labels", "5"),
    "the same fine-tune, clean labels, 10 epochs": ("fine-tune, clean labels", "10"),
    "the same fine-tune, 30% pairflip, 5 epochs": ("fine-tune, 30% pairflip", "5"),
    "the same fine-tune, 30% pairflip, 10 epochs": ("fine-tune, 30% pairflip", "10"),
}


def test_readme_results_table_is_the_raw_results():
    "Each figure of the README's results table that budget_sweep.json holds is its column's final accuracy there."
    generated_text = _sweep_table()
    columns = [c.strip() for c in generated_text.splitlines()[0].strip("|").split("|")][2:]
    generated = {key: dict(zip(columns, (c.split(" ")[0] for c in cells), strict=True))
                 for key, cells in _table(generated_text).items()}
    section = README.split("\n## Results\n")[1].split("\n## ")[0]
    text = section[section.index("\n| data, budget |"):].split("\n\n")[0]
    readme_columns = ["CE", "LS", "GCE", "SCE", "MixUp", "GR defaults", "GR --preset", "GR --tune"]
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip().strip("|").split("|")]
                                  for line in text.splitlines()[2:])}
    # The pairflip row's `--preset` cell points to the defaults' run, which is what --preset trains there today
    pointers = {("CIFAR-10, 5,000-image subset, 30% pairflip, 120 epochs", "GR --preset"): "= GR defaults³"}
    checked = 0
    for name, key in README_ROWS.items():
        assert name in rows, name
        final = generated[key]
        for column, shown in zip(readme_columns, rows[name], strict=True):
            if (name, column) in pointers:
                assert shown == pointers[name, column], (name, column, shown)
                continue
            if final[column] == "-":  # not in this results file (the 40-epoch row's GR cells: bench/cifar_budget.py)
                continue
            figures = re.findall(r"\d\.\d{3}", shown)
            assert figures and set(figures) <= set(final.values()), (name, column, shown)  # each one of the row's runs
            if shown[:1].isdigit():
                assert figures[0] == final[column], (name, column, shown)
                checked += 1
            else:
                assert shown.startswith("("), (name, column, shown)
    assert checked >= 56  # 59 when written


def _table3_gpu() -> dict:
    "bench/reproduce_table3.py's H100 results, by protocol: {'released' | 'text': {row name: row}}."
    import json

    return {p: json.loads((ROOT / "bench" / "results" / f"table3_gpu_{p}.json").read_text())["rows"]
            for p in ("released", "text")}


def test_table3_gpu_figures_are_the_raw_results():
    """BENCHMARKS.md's Table 3 on one H100 and the README's two H100 rows are the figures of
    bench/results/table3_gpu_{released,text}.json: final (best) accuracy, the paper's, fits and minutes."""
    results = _table3_gpu()
    section = (ROOT / "BENCHMARKS.md").read_text()
    text = section[section.index("\n| protocol | run |"):].split("\n\n")[0]
    protocol, checked = None, 0
    for line in text.splitlines()[3:]:
        first, run, acc, paper, fits, minutes = (c.strip() for c in line.strip().strip("|").split("|"))
        protocol = first.split(" ")[0].rstrip(":,") if first else protocol
        name = "CE" if run == "CE" else "GR + correction" if "correction" in run else "GR"
        r = results[protocol][f"{name} (warm-up 0.5)" if "warm-up 0.5" in run else name]
        assert acc.replace("*", "") == f"{r['test_accuracy']:.3f} ({r['test_accuracy_best']:.3f})", (line, r)
        assert paper == f"{r['paper']:.3f}"
        assert fits == f"{r['fit_corrupted']:.3f} / {r['fit_intact']:.3f}", line
        assert minutes == f"{r['seconds'] / 60:.1f}", line
        checked += 1
    assert checked == 7
    readme = README.split("\n## Results\n")[1]
    text = readme[readme.index("\n| CIFAR-10, 40% symmetric, ResNet-56, one H100 |"):].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()[3:]]
    assert [r[0].split(":")[0] for r in rows] == ["the authors' released solver", "the paper's text"]
    for cells, protocol in zip(rows, ("released", "text"), strict=True):
        r = results[protocol]
        assert cells[1] == f"{r['CE']['test_accuracy']:.3f}", cells
        assert cells[2] == f"{r['GR (warm-up 0.5)']['test_accuracy']:.3f}", cells
        assert cells[3] == f"{r['CE']['paper']:.3f} / {r['GR']['paper']:.3f}", cells


def test_threshold_table_is_the_raw_results():
    "BENCHMARKS.md's correction thresholds on the H100 are `reproduce_table3.py --thresholds` output of its JSON."
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("reproduce_table3", ROOT / "bench" / "reproduce_table3.py")
    table3 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table3)
    rows = json.loads((ROOT / "bench" / "results" / "table3_gpu_thresholds_released.json").read_text())["rows"]
    lines = []
    table3.print_thresholds(rows, lines.append)
    assert len(rows) == 6 and "\n".join(lines) + "\n" in (ROOT / "BENCHMARKS.md").read_text()


def test_seeds_table_pairs_each_seed_with_its_ce_run():
    """`budget_sweep.py --seeds`: seed 0 from the main results (GR defaults from whichever column trained them),
    each column's gain over CE on the same seed, mean +- sample sd over the seeds run; a column seeded elsewhere
    only shows '-' here. Figures worked by hand."""
    sweep = _sweep_module()
    acc = {"test_accuracy_final": 0.0}
    rows = {"cifar5k_sym40/120/ce": {**acc, "test_accuracy_final": 0.40},
            "cifar5k_sym40/120/gr": {**acc, "test_accuracy_final": 0.50, "lam": 0.5, "beta": 8.0, "warmup": 0.0},
            "cifar5k_sym40/120/preset": {**acc, "test_accuracy_final": 0.60, "lam": 1.0, "beta": 16.0, "warmup": 0.5},
            "digits40/30/ce": {**acc, "test_accuracy_final": 0.70}}
    seeded = {"cifar5k_sym40/120/ce/seed1": {"test_accuracy_final": 0.44},
              "cifar5k_sym40/120/default/seed1": {"test_accuracy_final": 0.62},
              "cifar5k_sym40/120/ce/seed2": {"test_accuracy_final": 0.42},
              "cifar5k_sym40/120/default/seed2": {"test_accuracy_final": 0.66},
              "digits40/30/gce/seed1": {"test_accuracy_final": 0.90}}
    text = sweep.seeds_table(rows, seeded)
    assert text.splitlines()[0] == "| case | epochs | seed | CE | GCE | GR defaults | GCE - CE | GR defaults - CE |"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    lines = {tuple(c[:3]): c[3:] for c in cells}
    sym = "CIFAR-5k, 40% symmetric"
    assert lines[sym, "120", "0"] == ["0.400", "-", "0.600", "-", "+0.200"]  # GR defaults: the preset column's run
    assert lines[sym, "120", "1"] == ["0.440", "-", "0.620", "-", "+0.180"]
    assert lines[sym, "120", "2"] == ["0.420", "-", "0.660", "-", "+0.240"]
    # CE 0.40 / 0.44 / 0.42; GR 0.60 / 0.62 / 0.66; gains 0.20 / 0.18 / 0.24 (sd of both: 0.0306)
    assert lines[sym, "120", "mean +- sd"] == ["0.420 +- 0.020 (3)", "-", "0.627 +- 0.031 (3)", "-",
                                               "+0.207 +- 0.031 (3)"]
    # digits: only GCE has another seed; seed 0's CE is not shown (not run with other seeds here), nor GCE's gain
    assert lines["digits, 40% symmetric", "30", "0"] == ["-", "-", "-", "-", "-"]
    assert lines["digits, 40% symmetric", "30", "1"] == ["-", "0.900", "-", "-", "-"]
    assert lines["digits, 40% symmetric", "30", "mean +- sd"] == ["-"] * 5


def test_budget_sweep_seed_draws_other_labels(tmp_path):
    "`budget_sweep.py --seed 1` trains the cell with another noise draw, in its own folder, and says which seed."
    sweep = _sweep_module()
    runs = {seed: sweep.run_one("digits40", 1, "ce", tmp_path, keep=False, seed=seed) for seed in (0, 1)}
    assert (tmp_path / "seed1" / "digits40" / "1" / "ce" / "summary.json").is_file()
    assert (tmp_path / "digits40" / "1" / "ce" / "summary.json").is_file()
    assert [runs[s]["seed"] for s in (0, 1)] == [0, 1] and "seed" not in runs[1]["flags"]
    assert sweep.row_key("digits40", 1, "ce", 1) == "digits40/1/ce/seed1" and sweep.row_key("digits40", 1, "ce", 0) \
        == "digits40/1/ce"
    t0, t1 = (np.array(runs[s]["label_transition"]) for s in (0, 1))
    assert t0.sum() == t1.sum() == 1437 and (t0 != t1).any()  # the same training set, 40% of it drawn again
    assert abs(np.trace(t1) / t1.sum() - 0.6) < 0.01


def test_benchmarks_seeds_table_is_the_raw_results():
    "BENCHMARKS.md's 'Across seeds' table is what `budget_sweep.py --seeds` prints from the two results files."
    import json

    results = ROOT / "bench" / "results"
    generated = _sweep_module().seeds_table(json.loads((results / "budget_sweep.json").read_text())["rows"],
                                            json.loads((results / "budget_seeds.json").read_text())["rows"])
    section = (ROOT / "BENCHMARKS.md").read_text().split("### Across seeds")[1]
    documented = section[section.index("\n| case |") + 1:].split("\n\n")[0]
    assert documented == generated
    assert generated.count("\n") >= 11  # two rows of seeds and their means when written


def test_results_table_of_a_seeds_file(tmp_path):
    """`--table`/`--merge` on a file of other seeds' runs prints their seeds table (seed 0 from the main results),
    not a crash; a file of seed 0's runs alone, the main table."""
    import json

    sweep = _sweep_module()
    main = tmp_path / "main.json"
    main.write_text(json.dumps({"rows": {"digits40/30/ce": {"test_accuracy_final": 0.70}}}))
    seeded = {"digits40/30/ce/seed1": {"test_accuracy_final": 0.74}}
    lines = sweep.results_table(seeded, main).splitlines()
    assert lines[0] == "| case | epochs | seed | CE |"  # no gain columns without a second column
    assert [line.split("|")[3:5] for line in lines[2:]] == [[" 0 ", " 0.700 "], [" 1 ", " 0.740 "],
                                                            [" mean +- sd ", " 0.720 +- 0.028 (2) "]]
    first = {"digits40/30/ce": {"test_accuracy_final": 0.70, "test_accuracy_best": 0.71}}
    assert sweep.results_table(first, main) == sweep.table(first)


def test_readme_figures_outside_its_tables_are_the_raw_results():
    "The demo's output, the CE baseline, the short-budget gap and the label-issue ranking of the README."
    import json

    results = ROOT / "bench" / "results"
    rows = json.loads((results / "budget_sweep.json").read_text())["rows"]
    demo, ce = rows["digits40/30/gr"], rows["digits40/30/ce"]
    assert (demo["lam"], demo["beta"], demo["epochs"]) == (0.5, 8.0, 30)  # `fastgr train` as it is
    for key, shown in (("test_accuracy_final", "test_accuracy_final      │  {:.4f}"),
                       ("train_accuracy_given", "train_accuracy_given     │  {:.4f}"),
                       ("train_accuracy_true", "train_accuracy_true      │  {:.4f}"),
                       ("noise_rate_realised", "noise_rate_realised      │  {:.4f}")):
        assert shown.format(demo[key]) in README, key
    assert f"test acc {demo['test_accuracy_final']:.4f}" in README
    assert f"ends at {ce['test_accuracy_final']:.3f}, having fitted every wrong label" in README
    assert ce["train_accuracy_given"] == 1.0
    gaps = [rows[f"cifar5k_sym40/{n}/ce"]["test_accuracy_final"] - rows[f"cifar5k_sym40/{n}/gr"]["test_accuracy_final"]
            for n in (10, 20)]
    assert f"GR's defaults end {100 * min(gaps):.1f}-{100 * max(gaps):.1f}" in README
    clean = [rows[f"cifar5k_clean/{n}/{c}"]["test_accuracy_final"] for n in (40, 120) for c in ("ce", "gr116")]
    cost = [100 * (clean[0] - clean[1]), 100 * (clean[2] - clean[3])]
    assert f"On clean labels GR's defaults cost {cost[0]:.1f}\npoints at 40 epochs and {cost[1]:.1f} at 120" in README
    ft = [100 * (rows[f"ft_sym40/{n}/gr"]["test_accuracy_final"] - rows[f"ft_sym40/{n}/ce"]["test_accuracy_final"])
          for n in (5, 10, 20)]
    assert f"GR's defaults end\n{min(ft):.1f}-{max(ft):.1f} points above CE at 5-20 epochs" in README
    other = [100 * (rows[f"{c}/5/gr"]["test_accuracy_final"] - rows[f"{c}/5/ce"]["test_accuracy_final"])
             for c in ("ft_clean", "ft_pair30")]
    assert f"at 5 epochs {other[0]:.1f} above it on clean labels and {other[1]:.1f} with 30% pairflip" in README
    issues = json.loads((results / "label_issues.json").read_text())
    summary = _bench_module("label_issues").summary(issues)  # "better than each of cleanlab's arms measured"
    assert summary in README and summary in (ROOT / "BENCHMARKS.md").read_text()
    for case in ("digits40", "cifar5k_sym40", "cifar5k_pair30", "c10n_random1"):
        arms = [v["auroc"] for k, v in issues[case].items() if k.startswith("cleanlab") and "auroc" in v]
        assert arms and issues[case]["fastgr_gr"]["auroc"] > max(arms), case


# The rows of BENCHMARKS.md's confident-joint table: the kept runs (noise_estimate.json's keys) each cell is of.
CJ_ROWS = {
    "digits 40%, GR's default, 30 epochs (label_issues' `gr`)": ["issues:digits40/gr"],
    "CIFAR-5k 40%, GR's default, 120 epochs (label_issues' `gr`)": ["issues:cifar5k_sym40/gr"],
    "CIFAR-5k 40%, `--auto`, 120 epochs": ["sweep:cifar5k_sym40/120/auto"],
    "CIFAR-5k 40%, the variant's `--auto`, 120 epochs": ["sweep_x12:cifar5k_sym40/120/auto"],
    "CIFAR-5k 40%, `--auto`, 10 epochs (CE throughout)": ["sweep:cifar5k_sym40/10/auto"],
    "CIFAR-10N random_label1, GR's default, 120 epochs": ["issues:c10n_random1/gr"],
    "CIFAR-10N random_label1, GR's default, 30 epochs": ["issues_e30:c10n_random1/gr"],
    "CIFAR-5k 30% pairflip, GR's default, 30 epochs": ["issues_e30:cifar5k_pair30/gr"],
    "fine-tune 40%, GR 0.5/8, 5 / 10 / 20 epochs": [f"sweep:ft_sym40/{n}/gr" for n in (5, 10, 20)],
    "fine-tune 40%, CE, 5 / 10 / 20 epochs": [f"sweep:ft_sym40/{n}/ce" for n in (5, 10, 20)],
    "CIFAR-5k clean, CE, 40 / 120 epochs": [f"sweep:cifar5k_clean/{n}/ce" for n in (40, 120)],
    "CIFAR-5k clean, GR 1/16/0.5, 40 / 120 epochs": [f"sweep:cifar5k_clean/{n}/gr116" for n in (40, 120)],
    "fine-tune clean, CE / GR 0.5/8, 5 epochs": [f"sweep:ft_clean/5/{c}" for c in ("ce", "gr")],
}


def test_confident_joint_table_is_the_raw_results():
    "Each estimate of BENCHMARKS.md's confident-joint table is noise_estimate.json's, for the run the row names."
    import json

    rows = json.loads((ROOT / "bench" / "results" / "noise_estimate.json").read_text())["rows"]
    text = (ROOT / "BENCHMARKS.md").read_text().split("**cleanlab's confident joint on the run's own probabilities")[1]
    table = {c[0]: c[1:] for c in ([x.strip() for x in line.strip().strip("|").split("|")]
                                   for line in text.split("\n| run | truth |")[1].split("\n\n")[0].splitlines()[2:])}
    assert table.keys() == CJ_ROWS.keys()
    for label, keys in CJ_ROWS.items():
        truth, cut, cj = (cell.replace("*", "") for cell in table[label][:3])
        assert truth == f"{rows[keys[0]]['true_noise_rate']:.3f}", label
        assert cut == " / ".join(f"{rows[k]['estimated_noise_rate']:.3f}" for k in keys), label
        assert cj == " / ".join(f"{rows[k]['confident_joint']['estimated_noise_rate']:.3f}" for k in keys), label


def test_step_size_figures_are_the_raw_results():
    "docs/design.md's GR-at-CE's-step figures, and the CE and GR beside them, are bench/results/step_size.json's."
    import json

    rows = json.loads((ROOT / "bench" / "results" / "step_size.json").read_text())["rows"]
    design = " ".join((ROOT / "docs" / "design.md").read_text().split())
    for key, words in (("cifar5k_sym40/10", "CIFAR-5k 40% at 10 epochs"),
                       ("ft_sym40/5", "the 40% fine-tune at 5 epochs"),
                       ("ft_clean/5", "the clean fine-tune at 5 epochs")):
        r = rows[key]
        assert (f"{words} {r['gr_at_ce_mass']['test_accuracy_final']:.3f} (GR {r['gr']:.3f}, CE {r['ce']:.3f})"
                in design), key


def test_step_size_probe_is_gr_at_cross_entropys_mass():
    "bench/step_size.py's gradient: GR's, example by example, scaled so that its L1 mass is cross-entropy's."
    import torch

    from fastgr.gradient import ce_gradient, gr_terms

    probe = _bench_module("step_size")
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(64, 10, generator=g) * 3, torch.randint(0, 10, (64,), generator=g)
    got = probe.ce_mass_terms(logits, y, 0.5, 8.0).gradient
    gr = gr_terms(logits, y, 0.5, 8.0).gradient
    assert torch.allclose(got.abs().sum(), ce_gradient(logits, y).abs().sum(), rtol=1e-5)
    ratio = got / gr
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), rtol=1e-4)  # one scale for the whole batch
    assert not torch.allclose(ratio[0, 0], torch.tensor(1.0))  # and not GR's own: the probe changes something


def test_margin_modes_reads_the_logit_margin_from_a_trace(tmp_path):
    "Where the prediction is another class the margin is z_given - max z_other exactly; else log(p / (1 - p))."
    import numpy as np
    import torch

    modes = _bench_module("margin_modes")
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    p = z.softmax(1).numpy()
    given = np.array([0, 0])  # the first agrees with its prediction, the second does not
    pred = p.argmax(1)
    np.savez(tmp_path / "epoch_001.npz", pred=pred, p_pred=p.max(1), p_given=p[np.arange(2), given])
    m = modes.margins(tmp_path / "epoch_001.npz")
    assert np.isclose(m[1], float(z[1, 0] - z[1, 1]), atol=1e-5)
    assert np.isclose(m[0], np.log(p[0, 0] / (1 - p[0, 0])), atol=1e-5)
    assert m[0] <= float(z[0, 0] - z[0, 1]) + 1e-6  # a lower bound of the true margin
    assert np.isclose(modes.confidence(tmp_path / "epoch_001.npz", 3), (p.max(1).mean() - 1 / 3) / (2 / 3))


def test_matched_confidence_reads_the_surest_tenth_of_each_predicted_class(tmp_path):
    "`top_disagree`: of each predicted class's most confident tenth, the share given another label; unseen left out."
    import numpy as np

    mc = _bench_module("matched_confidence")
    pred = np.array([0] * 10 + [1] * 10 + [-1])
    p_pred = np.r_[np.linspace(0.95, 0.5, 10), np.linspace(0.9, 0.55, 10), np.nan].astype(np.float32)
    given = np.r_[[1] + [0] * 9, [1] * 10, 0]  # class 0's surest example disagrees, class 1's agrees
    wrong = np.zeros(21, bool)
    wrong[[0, 5, 15]] = True  # predicted as given: 5 and 15; not: 0
    np.savez(tmp_path / "epoch_001.npz", pred=pred, p_pred=p_pred, p_given=p_pred)
    got = mc.read_epoch(tmp_path / "epoch_001.npz", given, wrong, 2)
    assert got["top_disagree"] == 0.5  # one of the two surest (one per class)
    assert np.isclose(got["wrong_fit"], 2 / 3)
    assert np.isclose(got["confidence"], (np.nanmean(p_pred) - 0.5) / 0.5)


def test_matched_confidence_table_is_the_raw_results():
    "docs/design.md's table of signals at matched confidence is bench/results/matched_confidence.json's."
    import json

    runs = json.loads((ROOT / "bench" / "results" / "matched_confidence.json").read_text())["runs"]
    design = (ROOT / "docs" / "design.md").read_text()
    names = {"cifar5k_clean/40": "clean CIFAR-5k, 40 epochs", "cifar5k_clean/120": "clean CIFAR-5k, 120 epochs",
             "cifar5k_sym40/120": "CIFAR-5k 40%, 120 epochs", "digits40/30": "digits 40%, 30 epochs"}
    rows = [("cifar5k_clean/40", "0.3"), ("cifar5k_sym40/120", "0.3"), ("cifar5k_clean/40", "0.4"),
            ("cifar5k_clean/120", "0.4"), ("cifar5k_sym40/120", "0.4"), ("cifar5k_clean/40", "0.5"),
            ("digits40/30", "0.5")]
    by_row = {r["row"]: r for r in runs.values()}
    for row, level in rows:
        x = by_row[row]["at_confidence"][level]
        line = (f"| {names[row]} | {level} | {x['epoch']} ({x['progress']:.2f}) | {x['noise_cl']:.2f} | "
                f"{x['top_disagree']:.2f} | {x['train_acc_given']:.2f} | {x['test_acc']:.2f} |")
        assert line in design, line


def test_readme_auto_figures_are_the_raw_results():
    "The README's `--auto` paragraph: its fine-tune, digits and CE figures are the results files' cells, in order."
    import json

    results = ROOT / "bench" / "results"
    rows = json.loads((results / "budget_sweep.json").read_text())["rows"]
    reruns = json.loads((results / "signal_trace_reruns.json").read_text())["rows"]
    text = " ".join(README.split("`--auto` (experimental, not yet the default)")[1].split("\n\n")[0].split())
    cells = [rows[f"{c}/5/auto"] for c in ("ft_sym40", "ft_clean", "ft_pair30")] + \
        [rows[f"{c}/5/ce"] for c in ("ft_sym40", "ft_clean", "ft_pair30")] + \
        [rows["digits40/30/auto"], reruns["digits40/30/ce"]]
    assert re.findall(r"\d\.\d{3}", text)[:8] == [f"{c['test_accuracy_final']:.3f}" for c in cells]
    for key in ("cifar5k_sym40/10", "cifar5k_sym40/20", "cifar5k_clean/40"):  # "cross-entropy's own run"
        auto, ce = rows[f"{key}/auto"], reruns.get(f"{key}/ce", rows[f"{key}/ce"])
        assert auto["curves"]["gr_share"] == [0.0] * auto["epochs"] and auto["cpu"] == ce["cpu"], key
        assert auto["curves"]["test_acc"] == ce["curves"]["test_acc"], key  # to the last bit
