import subprocess
import sys
import textwrap

from PIL import Image

from testbed.eval.cost import CostSettings
from testbed.eval.plots import LATENCY_PNG, SUCCESS_PNG, write_plots
from testbed.eval.stats import summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rows(*, with_latency=True):
    out = []
    for v, label in enumerate(("cell.conveyor.speed=0.1", "cell.conveyor.speed=0.2")):
        for policy in ("expert", "bc"):
            for e in range(6):
                served = with_latency and policy == "bc"
                out.append({
                    "episode_id": f"v{v}/{policy}/{e:04d}", "policy": policy, "variation": f"v{v}",
                    "variation_label": label, "success": policy == "expert" or e < 2 + v, "parts_placed": 2,
                    "cycle_times_s": [3.0 + 0.1 * e], "sim_s": 25.0, "wall_s": 0.7, "cpu_s": 0.8,
                    "policy_latency_ms_p50": 0.3 + 0.01 * e if served else None,
                    "policy_latency_ms_p95": 0.6 + 0.02 * e if served else None,
                })
    return out


def check_png(path, min_width=400, min_height=300):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= min_height
        # something was drawn: more than the white background
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)  # None: more colours than that
        assert colors is None or len(colors) > 10


def test_plots_are_valid_pngs_with_fixed_names(tmp_path):
    data = rows()
    summary = summarize(data, cost=CostSettings(), wall_s=3.0, workers=2)
    notes = []
    written = write_plots(data, summary, tmp_path / "plots", notes=notes)
    assert written == [tmp_path / "plots" / SUCCESS_PNG, tmp_path / "plots" / LATENCY_PNG]
    assert SUCCESS_PNG == "success_per_variation.png" and LATENCY_PNG == "policy_latency_per_policy.png"
    for path in written:
        check_png(path)
    assert notes == []


def test_the_same_results_draw_the_same_bytes(tmp_path):
    data = rows()
    summary = summarize(data, cost=CostSettings(), wall_s=3.0, workers=2)
    first = [p.read_bytes() for p in write_plots(data, summary, tmp_path / "one")]
    second = [p.read_bytes() for p in write_plots(data, summary, tmp_path / "two")]
    assert first == second


def test_latency_plot_is_skipped_with_a_note_when_no_policy_was_served(tmp_path):
    data = rows(with_latency=False)
    summary = summarize(data, cost=CostSettings(), wall_s=3.0, workers=2)
    notes = []
    written = write_plots(data, summary, tmp_path, notes=notes)
    assert written == [tmp_path / SUCCESS_PNG]
    check_png(written[0])
    assert not (tmp_path / LATENCY_PNG).exists()
    assert notes == [f"{LATENCY_PNG} not written: no episode had a policy round trip (no latency recorded)"]


def test_single_episode_with_nothing_placed_still_plots(tmp_path):
    data = [{"episode_id": "v0/expert/0000", "policy": "expert", "variation": "v0", "variation_label": "base",
             "success": False, "parts_placed": 0, "cycle_times_s": [], "sim_s": 25.0, "wall_s": 0.7, "cpu_s": 0.8,
             "policy_latency_ms_p50": 0.4, "policy_latency_ms_p95": 0.9}]
    summary = summarize(data, cost=CostSettings(), wall_s=1.0, workers=1)
    for path in write_plots(data, summary, tmp_path):
        check_png(path)


def test_missing_matplotlib_names_the_plots_extra(tmp_path):
    # a real interpreter in which matplotlib cannot be imported
    script = textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib"] = None
        from testbed.errors import FeatureUnavailable
        from testbed.eval.plots import write_plots
        try:
            write_plots([], {{"groups": []}}, {str(tmp_path)!r})
        except FeatureUnavailable as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("evaluation plots need matplotlib: install the plots extra "
                                   "(pip install 'testbed[plots]')")
