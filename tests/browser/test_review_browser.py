"""The review web app in a real browser: Selenium drives Debian's chromium (`make test-browser`).

Opens the page on a phantom dataset with predictions, drags a point and watches the AI label
change, saves with the keyboard and checks the CSV, places the 12 points of a new film by
clicking, compares the page's live geometry with utils.hip_geometry, and takes a screenshot
(REVIEW_SCREENSHOT=path keeps it; otherwise it goes to pytest's tmp folder).
"""
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(f"chromium or chromedriver is absent ({CHROMIUM}, {CHROMEDRIVER}); install them with "
                "`apt-get install -y chromium chromium-driver`", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from datasets.formats import read_annotation, read_detection, round_keypoints  # noqa: E402
from datasets.synthetic import generate_dataset  # noqa: E402
from utils.hip_geometry import acetabular_index, hip_frames, ihdi_grade  # noqa: E402
from utils.pipelines.review.server import create_app  # noqa: E402

SIZE = 320
GRADE_NAMES = {0: "ungradable", 1: "I", 2: "II", 3: "III", 4: "IV"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "ds"
    generate_dataset(root, 4, seed=11, size=SIZE, layout="ihdi12", progress=False)
    stems = sorted(p.stem for p in (root / "images").iterdir())
    # film 2 is new: no annotation, no boxes (it keeps its true points aside for the test)
    truth = read_annotation(root / "annotations" / f"{stems[1]}.csv")
    (root / "annotations" / f"{stems[1]}.csv").unlink()
    (root / "detections" / f"{stems[1]}.json").unlink()
    # predictions: each annotation with its points moved a little
    import pandas as pd
    from utils.evaluation.metrics import prediction_row
    rng = np.random.default_rng(0)
    rows = []
    for s in stems:
        gt = truth if s == stems[1] else read_annotation(root / "annotations" / f"{s}.csv")
        row = prediction_row(s, gt + rng.normal(0, 2.5, gt.shape), "ihdi12")
        row.update({"width": SIZE, "height": SIZE})
        rows.append(row)
    pd.DataFrame(rows).to_csv(root.parent / "predictions.csv", index=False)
    return root, stems, truth


@pytest.fixture(scope="module")
def server(dataset):
    root, _, _ = dataset
    app = create_app(root, predictions=root.parent / "predictions.csv")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    t0 = time.time()
    while not srv.started:
        if time.time() - t0 > 30 or not t.is_alive():
            pytest.fail("the review server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="review_chromium_")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_script_timeout(30)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def js(drv, script, *args):
    return drv.execute_script(script, *args)


def wait_for(drv, cond, what, timeout=20):
    WebDriverWait(drv, timeout).until(lambda d: cond(d), message=f"timed out waiting for {what}")


def text(drv, el_id):
    return drv.find_element(By.ID, el_id).text


def ai_label(value):
    return f"{value:.1f}\u00b0"


def page_kps(drv):
    return np.array(js(drv, "return window.review.state.kps;"), dtype=float)


def drag(drv, kp_index, dx, dy, steps=6):
    """Press on keypoint ``kp_index`` and move it by (dx, dy) CSS px in a few steps."""
    canvas = drv.find_element(By.ID, "canvas")
    x, y = js(drv, "return window.review.screenOf(arguments[0]);", kp_index)
    r = canvas.rect
    chain = ActionChains(drv, duration=20)
    chain.move_to_element_with_offset(canvas, int(round(x - r["width"] / 2)), int(round(y - r["height"] / 2)))
    chain.click_and_hold()
    for _ in range(steps):
        chain.move_by_offset(int(round(dx / steps)), int(round(dy / steps)))
    chain.release().perform()


def click_at_image(drv, p):
    """Click the canvas where image point ``p`` is drawn."""
    canvas = drv.find_element(By.ID, "canvas")
    x, y = js(drv, "const q = window.review.state; const v = q.view;"
                   "return [(arguments[0] + 0.5) * v.s + v.ox, (arguments[1] + 0.5) * v.s + v.oy];",
              float(p[0]), float(p[1]))
    r = canvas.rect
    ActionChains(drv, duration=20).move_to_element_with_offset(
        canvas, int(round(x - r["width"] / 2)), int(round(y - r["height"] / 2))).click().perform()


def test_drag_save_place_and_screenshot(dataset, server, browser, tmp_path):
    root, stems, truth = dataset
    drv = browser
    drv.get(server)
    wait_for(drv, lambda d: js(d, "return window.review && window.review.ready;"), "the page to load")
    assert drv.title.endswith("hip keypoint review") and text(drv, "title").startswith(stems[0])
    assert len(drv.find_elements(By.CSS_SELECTOR, "#image-list li")) == len(stems)
    ann = root / "annotations" / f"{stems[0]}.csv"
    start = read_annotation(ann)
    assert np.allclose(page_kps(drv), start)
    ai0 = acetabular_index(start)
    assert text(drv, "ai-left") == ai_label(ai0[0]) and text(drv, "ai-right") == ai_label(ai0[1])
    assert text(drv, "ihdi-left") == GRADE_NAMES[ihdi_grade(start)[0]]
    assert drv.find_element(By.ID, "dirty").is_displayed() is False
    # the prediction is shown beside the annotation, with the server's values
    pred = js(drv, "return window.review.state.detail.prediction;")
    assert pred and text(drv, "pred-ai-left") == ai_label(pred["measures"]["left"]["ai_deg"])

    # drag the image-left hip's lateral acetabular edge (point 0) up by 24 px: the AI grows
    drag(drv, 0, 0, -24)
    kps = page_kps(drv)
    assert kps[0, 1] < start[0, 1] - 5 and np.allclose(kps[1:], start[1:])
    live = acetabular_index(kps)
    assert live[0] > ai0[0] + 2
    assert text(drv, "ai-left") == ai_label(live[0]) != ai_label(ai0[0])
    assert text(drv, "ai-right") == ai_label(ai0[1])                 # the other hip's roof did not move
    assert drv.find_element(By.ID, "dirty").is_displayed() and drv.title.startswith("* ")
    assert np.array_equal(read_annotation(ann), start)                 # not saved yet

    # undo and redo the drag with the keyboard, then save with Ctrl+S
    body = drv.find_element(By.TAG_NAME, "body")
    body.send_keys("z")
    assert np.allclose(page_kps(drv), start) and text(drv, "ai-left") == ai_label(ai0[0])
    drag(drv, 0, 0, -24)
    kps = page_kps(drv)
    ActionChains(drv).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    wait_for(drv, lambda d: not d.find_element(By.ID, "dirty").is_displayed(), "the save")
    saved = read_annotation(ann)
    assert np.array_equal(saved, round_keypoints(kps))
    hist = list((root / "annotations" / ".history").glob(f"{stems[0]}.*.csv"))
    assert len(hist) == 1 and np.array_equal(read_annotation(hist[0]), start)
    server_ai = js(drv, "return window.review.state.detail.measures;")
    assert server_ai["left"]["ai_deg"] == pytest.approx(acetabular_index(saved)[0], abs=1e-9)
    assert text(drv, "ai-left") == ai_label(server_ai["left"]["ai_deg"])     # live JS == server
    assert "saved" in text(drv, "status") and not drv.title.startswith("* ")

    # the page's geometry is the server's: random films of every IHDI grade
    lay = js(drv, "const d = window.review.state.detail; return {triradiate: d.triradiate, "
                  "lateral_edge: d.lateral_edge, hpoint: d.hpoint};")
    rng = np.random.default_rng(1)
    grades_seen = set()
    for _ in range(60):
        k = saved + rng.normal(0, 12, saved.shape)
        f = hip_frames(k, "ihdi12")
        got = js(drv, "const f = window.review.hipFrames(arguments[0], arguments[1]);"
                      "return [f.left.ai_deg, f.right.ai_deg, f.left.grade, f.right.grade];", k.tolist(), lay)
        assert got[0] == pytest.approx(float(f["left"]["ai_deg"]), abs=1e-9)
        assert got[1] == pytest.approx(float(f["right"]["ai_deg"]), abs=1e-9)
        assert got[2:] == [int(f["left"]["grade"]), int(f["right"]["grade"])]
        grades_seen |= set(got[2:])
    assert grades_seen >= {1, 2, 3, 4}

    # a new film: next image with the arrow key, then click its 12 points in the layout's order
    body.send_keys(Keys.ARROW_RIGHT)
    wait_for(drv, lambda d: text(d, "title").startswith(stems[1]), "the next image")
    assert "point 1 of 12: image-left hip, lateral edge" in text(drv, "prompt")
    assert text(drv, "ai-left") == "-"
    for i, p in enumerate(truth):
        click_at_image(drv, p)
        if i + 1 < len(truth):
            assert f"point {i + 2} of 12" in text(drv, "prompt")
    assert "Drag a point" in text(drv, "prompt")
    scale = js(drv, "return window.review.state.view.s;")
    placed = page_kps(drv)
    # clicks land on whole CSS pixels, counted from the canvas centre Selenium rounds: 1.5 px
    assert np.abs(placed - truth).max() <= 1.5 / scale
    drv.find_element(By.ID, "save").click()
    wait_for(drv, lambda d: not d.find_element(By.ID, "dirty").is_displayed(), "the save of the new film")
    new = read_annotation(root / "annotations" / f"{stems[1]}.csv")
    assert np.array_equal(new, round_keypoints(placed))
    boxes = read_detection(root / "detections" / f"{stems[1]}.json")
    for side, idx in (("left", slice(0, 6)), ("right", slice(6, 12))):
        x1, y1, x2, y2 = boxes[side]
        assert ((new[idx, 0] > x1) & (new[idx, 0] < x2) & (new[idx, 1] > y1) & (new[idx, 1] < y2)).all()
    assert text(drv, "ai-left") == ai_label(acetabular_index(new)[0])

    # back to the first film, zoomed in a little, for the screenshot
    body.send_keys(Keys.ARROW_LEFT)
    wait_for(drv, lambda d: text(d, "title").startswith(stems[0]), "the previous image")
    assert np.array_equal(page_kps(drv), saved)
    shot = Path(os.environ.get("REVIEW_SCREENSHOT", tmp_path / "review_app.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")
