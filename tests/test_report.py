"""`growthgr report`: the day's reports gathered into one self-contained HTML page, rendered by a
real headless Chromium (the Debian package; `.ci/run` installs it)."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from expectations.gate import Failure, GateResult, store_result
from foundation import catalog
from foundation.catalog import CURVES
from foundation.lake import Lake, parse_ds
from growthgr.report import REPORT, page_stats, write_report

DS = "2026-02-16"
TRAINED = ("dense", "itemltv")                       # the models with a learning curve on DS


def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2, 3], [0.1, 0.4, 0.35, 0.8], marker="o")
    ax.set_title("Recall@K")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake.open(str(tmp_path / "lake"))
    put = lake.store.put_bytes
    put(catalog.report_key("itemltv", DS, "study.md"),
        b"ItemLTV study\n\n| model | PEHE |\n|---|---|\n| itemltv | 0.0500 |\n| ridge | 0.0394 |\n\n<script>x</script>\n")
    put(catalog.report_key("itemltv", DS, "study.json"), b'{"shadowed": "by study.md"}')
    put(catalog.report_key("itemltv", DS, "qini.png"), _png())
    put(catalog.report_key("abtest", DS, "user.json"),
        json.dumps({"design": "user", "new_item_gmv": {"delta_pct": 4.2, "ci95": [1.1, 7.3]}}).encode())
    put(catalog.report_key("itemltv", "2026-02-15", "study.md"), b"| other day |\n|---|\n| x |\n")
    for model in TRAINED:                            # per-epoch tables of `models.training.learning_curves`
        put(f"{catalog.report_prefix(CURVES, DS)}/{model}/epochs.csv",
            b"epoch,train_loss,val_loss\n0,1.2,1.3\n1,0.8,1.0\n2,0.6,0.9\n")
    put(f"{catalog.report_prefix(CURVES, '2026-02-15')}/multigr_sft/epochs.csv", b"epoch,train_loss\n0,3.0\n")
    day = parse_ds(DS)                               # gate results as the gate runner stores them
    store_result(lake, GateResult("raw", day, True, suites=["raw.items", "raw.clicks"], n_expectations=196))
    store_result(lake, GateResult("pool", day, False, [Failure("curated.new_item_pool", f"ds={DS}", "score",
                                                               "not_null", "3 of 50 rows unexpected")],
                                  suites=["curated.new_item_pool"], n_expectations=9))
    return lake


def test_page_gathers_every_report_of_the_day_and_nothing_else(lake):
    key = write_report(lake, DS, {"release_id": "ds=2026-02-16-abc", "files": {"pool.parquet": {"bytes": 10}}})
    assert key == catalog.report_key(REPORT, DS, "index.html")
    page = lake.store.get_bytes(key).decode()
    stats = page_stats(page)
    assert stats == {"tables": 6, "images": 3, "sections": 5}   # study.md, abtest json, 3 of gates, release; qini.png, curves
    assert (page.index('id="itemltv"') < page.index(f'id="{CURVES}"') < page.index('id="abtest"') < page.index('id="gates"')
            < page.index('id="release"'))
    assert "<td>0.0500</td>" in page and "new_item_gmv.delta_pct" in page and "1.1, 7.3" in page
    assert "shadowed" not in page and "other day" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page           # report text is never executed
    gates = page[page.index('id="gates"'):page.index('id="release"')]
    assert "<tr class='failed'><td>pool</td><td>FAILED</td><td>1</td><td>9</td><td>1</td>" in gates
    assert ("<td>pool</td><td>curated.new_item_pool</td><td>ds=2026-02-16</td><td>score</td><td>not_null</td>"
            "<td>3 of 50 rows unexpected</td>") in gates             # the failed rule, field by field
    assert "<td>raw</td><td>raw.clicks</td><td>passed</td><td>0</td>" in gates   # every suite of every gate
    assert "src=\"http" not in page and "<link" not in page              # self-contained
    assert "data:image/png;base64," in page


def test_a_plot_follows_its_markdown(lake):
    put = lake.store.put_bytes
    for name in ("user.md", "user_retrain.md"):
        put(catalog.report_key("abtest", DS, name), f"# {name}\n".encode())
    for name in ("user_trajectory.png", "user_retrain_trajectory.png", "gini.png"):
        put(catalog.report_key("abtest", DS, name), _png())
    page = lake.store.get_bytes(write_report(lake, DS)).decode()
    order = [page.index(s) for s in ("<h1>user.md", 'alt="user_trajectory.png"', "<h1>user_retrain.md",
                                     'alt="user_retrain_trajectory.png"', 'alt="gini.png"')]
    assert order == sorted(order)


def test_a_day_without_reports_says_so(tmp_path):
    lake = Lake.open(str(tmp_path / "empty"))
    page = lake.store.get_bytes(write_report(lake, DS)).decode()
    assert page_stats(page)["sections"] == 0 and "no report was found" in page


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is missing: .ci/run installs the Debian package `chromium`")
        pytest.skip("no chromium on this machine (`apt-get install chromium`)")
    return found


def test_headless_chromium_renders_the_tables_and_images(lake, tmp_path):
    from PIL import Image

    chromium = _chromium()
    page = tmp_path / "index.html"
    page.write_bytes(lake.store.get_bytes(write_report(lake, DS)))
    shot = tmp_path / "shot.png"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<table") == 5 and dom.count("<img ") == 1 + len(TRAINED) and "ItemLTV" in dom
    curves = dom[dom.index(f'<section id="{CURVES}">'):]
    curves = curves[:curves.index("</section>")]
    assert "Learning curves" in curves and curves.count("<figure") == len(TRAINED)   # one chart per trained model
    assert all(f'alt="{model}"' in curves for model in TRAINED) and "multigr_sft" not in curves
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1600)
    low, high = image.getextrema()
    assert high - low > 100                                  # not a blank page: text, table borders, the plot
    histogram = image.histogram()
    assert sum(histogram[:200]) > 0.01 * image.size[0] * image.size[1]   # a visible amount of ink


def test_pipeline_timings_are_recorded_and_reported(tmp_path):
    """`pipeline.timed` records every step (a failed one too, then re-raises); the page shows a table and a bar plot."""
    from foundation.config import load_settings
    from growthgr import pipeline

    settings = load_settings("tiny", env={}).model_copy(update={"lake_root": str(tmp_path / "lake")})

    def spark(s, ds):
        return {"rows": 3}

    def publish(s, ds):
        raise pipeline.GateFailed("pool: 2 expectations failed")

    assert pipeline.timed(spark, settings, DS) == {"rows": 3}
    with pytest.raises(pipeline.GateFailed):
        pipeline.timed(publish, settings, DS)
    pipeline.timed(spark, settings, DS, name="gate_raw")
    lake = Lake.open(str(tmp_path / "lake"))
    records = {r["step"]: r for r in (json.loads(lake.store.get_bytes(catalog.pipeline_step_key(DS, s)))
                                      for s in ("spark", "publish", "gate_raw"))}
    assert records["spark"]["status"] == "ok" and records["spark"]["seconds"] >= 0 and records["spark"]["ds"] == DS
    assert records["publish"]["status"] == "failed" and "2 expectations failed" in records["publish"]["error"]
    page = lake.store.get_bytes(write_report(lake, DS)).decode()
    section = page[page.index('<section id="pipeline">'):]
    assert "Pipeline timings" in section and section.count("<tr class='passed'>") == 2
    assert section.count("<tr class='failed'>") == 1 and "pipeline_timings.png" in section
    assert page_stats(page) == {"tables": 1, "images": 1, "sections": 1}


def test_a_wide_plot_takes_the_page_width():
    from PIL import Image

    from growthgr.report import image_html

    def png(width: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (width, 20), "white").save(buf, format="PNG")
        return buf.getvalue()

    assert image_html("trajectory.png", png(1300)).startswith("<figure class='wide'>")
    assert image_html("qini.png", png(400)).startswith("<figure><img")


OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]   # every http(s) request fails


def _offline_dom(chromium: str, uri: str, profile) -> str:
    """The DOM of `uri` after headless Chromium ran its scripts with the network cut off."""
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *OFFLINE,
                           f"--user-data-dir={profile}", "--dump-dom", uri],
                          check=True, capture_output=True, text=True, timeout=120).stdout


def _text(dom: str) -> str:
    """What a reader sees of a DOM: its text without scripts, styles and tags, spaces collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def test_gate_results_are_readable_offline(tmp_path):
    """A real gate fails (a day's clicks dropped to 5 rows) and renders its GX Data Docs, twice. With
    the network cut off, Chromium shows GX's index without a single validation (its table is built by
    scripts from CDNs), while the day's report shows the gate, its suite and the failed rule, and its
    link opens the suite's GX validation page, which is server-rendered and says it failed."""
    from test_gx_handmade import DAYS, make_raw_day

    from expectations.gate import validate
    from foundation.config import load_settings

    chromium = _chromium()
    lake = Lake.open(str(tmp_path / "lake"))
    for i, ds in enumerate(DAYS[:2]):
        lake.write_many("raw", ds, make_raw_day(ds, i))
    lake.write_partition("raw", "clicks", DAYS[1], lake.read_partition("raw", "clicks", DAYS[1]).slice(0, 5))
    for _ in range(2):                               # a re-run replaces the site
        result = validate(load_settings("tiny", env={}).gates_config(), lake, "clicks", parse_ds(DAYS[1]),
                          build_docs=True)
    assert {f.rule for f in result.failures} == {"volume_vs_previous_day"}
    docs = catalog.data_docs_prefix("clicks", DAYS[1])
    assert len([k for k in lake.store.list(docs + "/validations/") if k.endswith(".html")]) == 1

    gx_index = _text(_offline_dom(chromium, Path(result.data_docs_uri).as_uri(), tmp_path / "p1"))
    assert "Validation Results" in gx_index and "raw.clicks" not in gx_index       # GX's list is empty offline

    report = Path(lake.store.url(write_report(lake, DAYS[1])))
    dom = _offline_dom(chromium, report.as_uri(), tmp_path / "p2")
    gates = dom[dom.index('<section id="gates">'):]
    gates = gates[:gates.index("</section>")]
    text = _text(gates)
    assert "clicks FAILED 1 19 1" in text                          # gate, result, suites, expectations, failed
    assert f"clicks raw.clicks ds={DAYS[1]} * volume_vs_previous_day observed 5" in text
    assert "clicks raw.clicks FAILED 1 validation page" in text
    href = re.search(r"<a href=\"([^\"]+)\">validation page</a>", gates).group(1)
    page = (report.parent / html.unescape(href)).resolve()
    assert page.is_file() and page.is_relative_to(Path(lake.store.url(docs + "/validations")))
    shown = _text(_offline_dom(chromium, page.as_uri(), tmp_path / "p3"))
    assert "Expectation Suite: raw.clicks" in shown and "Status: Failed" in shown
    assert "Unsuccessful Expectations 1" in shown
