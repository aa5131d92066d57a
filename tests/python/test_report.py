"""The results store and the HTML report, end to end: real loadgen-client runs against the live
server are recorded in an SQLite store, `loadgen-client runs` lists and filters them, and the
report `loadgen-client report` writes renders in headless Chromium (Debian's, driven by
Playwright) with no console errors, nothing fetched, and the plots and the Pareto view on the
screenshot.
"""

import re
import shutil
import subprocess

import pytest
from PIL import Image

from harness import DIGITS_DATA

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: without the background-networking flags Chromium keeps trying
# hosts this closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
# Short runs that are VALID on a debug build: enough queries for early stopping. Offline's
# expected QPS is far above what the box does (up to ~75 000 samples/s here), so the one query
# outlasts min_duration; too low a value ended the run early and INVALID on a faster machine.
USER_CONF = ("*.*.min_duration = 1500\n*.*.min_query_count = 100\n"
             "*.SingleStream.target_latency = 0.2\n*.Offline.target_qps = 200000\n")
TIMEOUT_S = 120


def client(loadgen_client, cwd, *args):
    proc = subprocess.run([str(loadgen_client), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    return proc


def output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="module")
def recorded(loadgen_client, grpc_url, tmp_path_factory):
    """Five runs recorded in one store: two SingleStream, Server, Offline and an Offline
    accuracy run. Returns (folder, store, {name: output folder})."""
    root = tmp_path_factory.mktemp("report")
    store = root / "results.sqlite"
    conf = root / "user.conf"
    conf.write_text(USER_CONF)
    runs = {
        "ss-a": ["--scenario", "SingleStream"],
        "ss-b": ["--scenario", "SingleStream", "--connections", "1"],
        "server": ["--scenario", "Server", "--qps", "300", "--max-latency", "1", "--time", "2"],
        "offline": ["--scenario", "Offline"],
        "accuracy": ["--scenario", "Offline", "--accuracy"],
    }
    dirs = {}
    for name, args in runs.items():
        out = root / name
        proc = client(loadgen_client, root, "--profile", "digits-cnn", "--dataset", "imagenet",
                      "--dataset-path", str(DIGITS_DATA), "--endpoint", grpc_url,
                      "--user-conf", str(conf), "--results-db", str(store),
                      "--output-dir", str(out), *args)
        assert proc.returncode == 0, output(proc)
        assert re.search(r"^recorded as run \d+ in ", proc.stdout, re.M), output(proc)
        dirs[name] = out
    return root, store, dirs


def listed_ids(loadgen_client, cwd, store, *filters):
    proc = client(loadgen_client, cwd, "runs", "--results-db", str(store), *filters)
    assert proc.returncode == 0, output(proc)
    return [int(line.split()[0]) for line in proc.stdout.splitlines()[1:-1]], proc.stdout


def test_runs_lists_and_filters_what_was_recorded(loadgen_client, recorded):
    root, store, dirs = recorded
    ids, text = listed_ids(loadgen_client, root, store)
    assert ids == [1, 2, 3, 4, 5], text
    for name, out in dirs.items():
        assert str(out) in text, f"{name}'s folder in\n{text}"
    assert text.count(" digits-cnn ") == 5 and text.count(" cpu ") == 5, text
    assert re.search(r"AccuracyOnly\s.*\s9\d\.\d{3}\s", text), "the accuracy run's accuracy"
    assert listed_ids(loadgen_client, root, store, "--scenario", "SingleStream")[0] == [1, 2]
    valid, text = listed_ids(loadgen_client, root, store, "--valid")
    assert valid == [1, 2, 3, 4], text
    assert listed_ids(loadgen_client, root, store, "--last", "2")[0] == [4, 5]
    assert listed_ids(loadgen_client, root, store, "--device", "edgetpu:0")[0] == []


def test_the_report_renders_in_chromium_with_its_plots_and_the_pareto_view(
        loadgen_client, recorded, tmp_path):
    from playwright.sync_api import sync_playwright

    root, store, dirs = recorded
    page_path = tmp_path / "report.html"
    proc = client(loadgen_client, root, "runs", "--results-db", str(store), "--report",
                  str(page_path))
    assert proc.returncode == 0, output(proc)
    html = page_path.read_text()
    # Self-contained: no scripts, nothing to fetch.
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "fetches something"
    assert "url(" not in html and "@import" not in html

    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        assert page.title() == "loadgen-client report"
        rows = page.locator("h2#comparison + p + table tr")
        assert rows.count() == 1 + 5
        table = []
        for i in range(1, 6):
            cells = rows.nth(i).locator("td").all_inner_texts()
            table.append((cells, "dominated" in (rows.nth(i).get_attribute("class") or "")))
        # The two SingleStream runs (same accuracy): the one with more throughput and less
        # latency dominates, else both are on the frontier; greyed exactly when dominated.
        (a, a_grey), (b, b_grey) = table[0], table[1]
        ta, tb = float(a[5]), float(b[5])
        la, lb = (float(c[6].split()[0]) for c in (a, b))
        def verdict(t, l, other_t, other_l):
            dominated = other_t >= t and other_l <= l and (other_t > t or other_l < l)
            return "dominated" if dominated else "on the frontier"
        expected = (verdict(ta, la, tb, lb), verdict(tb, lb, ta, la))
        assert (a[8], b[8]) == expected, table
        assert (a_grey, b_grey) == (a[8] == "dominated", b[8] == "dominated"), table
        accuracy_row, accuracy_grey = table[4]
        assert accuracy_row[4] == "AccuracyOnly" and accuracy_grey, table
        for scenario in ["Server", "Offline", "SingleStream"]:
            assert page.get_by_text(f"Pareto frontier: {scenario}").count() == 1
        charts = page.locator("svg")
        # 3 Pareto charts; per performance run latency and throughput over time, CDF, histogram,
        # breakdown and batch sizes.
        assert charts.count() >= 3 + 4 * 6, charts.count()
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box and box["width"] >= 600 and box["height"] >= 300, (i, box)
        for title in ["Latency over time", "Throughput over time", "Latency CDF",
                      "Latency histogram", "Executed batch sizes"]:
            assert page.get_by_text(title).count() == 4, title
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == [], problems
    assert requests == [page_path.as_uri()], requests

    # The screenshot shows the plots: the series colours cover real areas of it.
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    count = {c: n for n, c in colours}
    blue, red, green = (31, 119, 180), (214, 39, 40), (44, 160, 44)
    assert count.get(blue, 0) > 20_000, "line and bar blue"
    assert count.get(red, 0) > 200, "Pareto points"
    assert count.get(green, 0) > 1_000, "throughput lines"


def test_report_of_folders_and_its_errors(loadgen_client, recorded, tmp_path):
    root, _, dirs = recorded
    page_path = tmp_path / "two.html"
    proc = client(loadgen_client, root, "report", str(dirs["server"]), str(dirs["accuracy"]),
                  "-o", str(page_path))
    assert proc.returncode == 0, output(proc)
    assert "wrote " in proc.stdout and "(2 runs)" in proc.stdout, output(proc)
    html = page_path.read_text()
    # The Server run takes the accuracy of the accuracy run of the same model and device.
    assert re.search(r"accuracy 98\.\d{3}%", html), "paired accuracy"
    proc = client(loadgen_client, root, "report", str(tmp_path), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 1, output(proc)
    assert "mlperf_log_detail.txt" in proc.stderr and "output folder" in proc.stderr, output(proc)

    # A store whose run folders are gone: listed, but nothing to report.
    gone = tmp_path / "gone"
    store = tmp_path / "store.sqlite"
    proc = client(loadgen_client, root, "--profile", "digits-cnn", "--endpoint", "null",
                  "--dataset", "synthetic", "--count", "16", "--time", "0.2", "--results-db",
                  str(store), "--output-dir", str(gone))
    assert proc.returncode == 0, output(proc)
    shutil.rmtree(gone)
    proc = client(loadgen_client, root, "runs", "--results-db", str(store), "--report",
                  str(tmp_path / "z.html"))
    assert proc.returncode == 2, output(proc)
    assert "is gone" in proc.stderr and "nothing to report" in proc.stderr, output(proc)
    proc = client(loadgen_client, root, "runs", "--results-db", str(tmp_path / "none.sqlite"))
    assert proc.returncode == 2 and "no run was recorded there yet" in proc.stderr, output(proc)
