"""The pack inside a real ComfyUI: server, API workflows, template route, and the real frontend.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (docs/INTEGRATION.md says how to get one).
The server runs with COMFYUI_PYTHON (default: this Python) from a temporary base directory that holds
custom_nodes/ComfyUI-Flipbook (a link to this checkout), tiny random models written by
`python -m comfyui_flipbook make-test-models`, and empty input/output/user folders, so nothing in the
ComfyUI checkout is touched. The browser part needs the `playwright` package (never
`playwright install`) and Chromium at /usr/bin/chromium (or FLIPBOOK_CHROMIUM).

Besides the shipped workflows, a core-only workflow (EmptyImage -> SaveAnimatedWEBP) runs first as a
control: when it fails the harness or ComfyUI is broken, not the pack.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-Flipbook"          # the custom_nodes folder name, also the template route's key
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
CHROMIUM = os.environ.get("FLIPBOOK_CHROMIUM", "/usr/bin/chromium")
# another frontend than the one ComfyUI's requirements pin, e.g. the newest comfyui-frontend-package
# (pip install --target DIR comfyui-frontend-package==1.58.*; DIR/comfyui_frontend_package/static)
FRONTEND_ROOT = os.environ.get("FLIPBOOK_FRONTEND_ROOT", "")
RELEASES = sorted((REPO / "tests" / "interface").glob("release-*"))
START_TIMEOUT = 300.0                    # s, importing ComfyUI and the pack on a busy 2-core CPU
PROMPT_TIMEOUT = 600.0                   # s, per workflow, tiny models on a CPU
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.json"))
TEMPLATE_FOLDER = "workflows"            # served by ComfyUI's app/custom_node_manager.py (see _template_dirs)
# ComfyUI serves the first of these folders that exists as /api/workflow_templates/<pack>/ and lists
# the .json files of all of them (app/custom_node_manager.py, CustomNodeManager.add_routes).
TEMPLATE_FOLDER_NAMES = ["example_workflows", "example", "examples", "workflow", "workflows"]

pytestmark = pytest.mark.skipif(
    not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file()),
    reason="real-ComfyUI integration: set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to "
           "a Python that runs it) to run these; see docs/INTEGRATION.md",
)

# A control workflow of core nodes only, API format.
CORE_SMOKE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 0xFF8000}},
    "2": {"class_type": "SaveAnimatedWEBP",
          "inputs": {"images": ["1", 0], "filename_prefix": "flipbook_core_smoke", "fps": 6.0,
                     "lossless": True, "quality": 80, "method": "fastest"}},
}


class Server:
    def __init__(self, base: Path, log: Path, proc: subprocess.Popen, port: int):
        self.base, self.log, self.proc, self.port = base, log, proc, port
        self.url = f"http://127.0.0.1:{port}"

    def tail(self, n: int = 80) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def explain(self, msg: str) -> str:
        return f"{msg}\n--- ComfyUI log ({self.log}), last lines ---\n{self.tail()}"

    def get(self, path: str, timeout: float = 60.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict, timeout: float = 60.0):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def run_prompt(self, prompt: dict, name: str) -> dict:
        """Queue one API workflow and wait for its history entry (bounded)."""
        code, res = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        assert code == 200 and "prompt_id" in res, self.explain(
            f"{name}: POST /prompt refused ({code}): {json.dumps(res, indent=1)[:4000]}")
        pid = res["prompt_id"]
        deadline = time.monotonic() + PROMPT_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.explain(f"{name}: ComfyUI exited ({self.proc.returncode})")
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                return hist[pid]
            time.sleep(0.5)
        self.post("/interrupt", {})
        pytest.fail(self.explain(f"{name}: not finished after {PROMPT_TIMEOUT:.0f} s"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pack_env(pkg_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(pkg_dir)
    env["FLIPBOOK_STRICT_IMPORT"] = "1"   # a broken node family fails loudly instead of vanishing
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfyui")
    base = tmp / "base"
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    # No first-run template dialog over the canvas.
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    pkg = tmp / "pkg"
    pkg.mkdir()
    (pkg / "comfyui_flipbook").symlink_to(REPO, target_is_directory=True)
    if importlib.util.find_spec("comfyui_flipbook") is None:  # the tests import the pack too (this checkout)
        sys.path.insert(0, str(pkg))

    made = subprocess.run([COMFYUI_PYTHON, "-m", "comfyui_flipbook", "make-test-models", str(base / "models")],
                          env=_pack_env(pkg), capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, f"make-test-models failed:\n{made.stdout}\n{made.stderr}"
    print(f"\n[comfyui] base directory {base}; make-test-models wrote {len(made.stdout.split())} paths")

    port = _free_port()
    log = tmp / "comfyui.log"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)           # the pack comes in through custom_nodes/ only
    env["FLIPBOOK_STRICT_IMPORT"] = "1"
    cmd = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
    if FRONTEND_ROOT:
        cmd += ["--front-end-root", FRONTEND_ROOT]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=COMFYUI_PATH, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    srv = Server(base, log, proc, port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(srv.explain(f"ComfyUI exited during start-up ({proc.returncode}): {' '.join(cmd)}"))
            try:
                srv.get("/system_stats", timeout=5)
                break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(srv.explain(f"ComfyUI did not answer within {START_TIMEOUT:.0f} s"))
            time.sleep(1.0)
        print(f"[comfyui] up on {srv.url} (log {log})")
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info", timeout=120)


def _ordered_inputs(input_types: dict, section: str) -> list[str]:
    return list(input_types.get(section, {}).keys())


def _type_name(decl) -> str:
    typ = decl[0]
    return "COMBO" if isinstance(typ, (list, tuple)) else str(typ)


def test_object_info_lists_every_pack_node_with_its_inputs(server, object_info):
    from comfyui_flipbook import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    assert NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(object_info))
    assert not missing, server.explain(f"nodes missing from /object_info: {missing}")
    problems = []
    for name, cls in NODE_CLASS_MAPPINGS.items():
        info, it = object_info[name], cls.INPUT_TYPES()
        for section in ("required", "optional"):
            ours = _ordered_inputs(it, section)
            theirs = _ordered_inputs(info.get("input", {}), section)
            if ours != theirs:
                problems.append(f"{name}.{section}: INPUT_TYPES {ours} != /object_info {theirs}")
            for key in set(ours) & set(theirs):
                a, b = _type_name(it[section][key]), _type_name(info["input"][section][key])
                if b != a and not (a == "COMBO" and b == "COMBO"):
                    problems.append(f"{name}.{key}: type {a} != {b}")
        if list(info.get("output", [])) != [str(t) for t in cls.RETURN_TYPES]:
            problems.append(f"{name}: outputs {info.get('output')} != RETURN_TYPES {cls.RETURN_TYPES}")
        if info.get("display_name") != NODE_DISPLAY_NAME_MAPPINGS.get(name, name):
            problems.append(f"{name}: display name {info.get('display_name')!r}")
        if info.get("python_module", "").split(".")[-1] != PACK_NAME:
            problems.append(f"{name}: served from {info.get('python_module')!r}, not custom_nodes.{PACK_NAME}")
    assert not problems, server.explain("\n".join(problems))
    print(f"[comfyui] /object_info: all {len(NODE_CLASS_MAPPINGS)} pack nodes with matching inputs")


def test_static_core_node_table_matches_real_comfyui(object_info):
    """tests/workflow_format.py checks workflows against its own copy of ComfyUI's core node signatures;
    that copy must match what this ComfyUI serves (input names in order, kinds, ranges, combos, outputs)."""
    spec = importlib.util.spec_from_file_location("flipbook_workflow_format", REPO / "tests" / "workflow_format.py")
    if spec is None or not (REPO / "tests" / "workflow_format.py").is_file():
        pytest.fail("tests/workflow_format.py (the static workflow checker) is missing")
    wf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wf)
    problems = []
    for name, (req, opt, outs) in wf.CORE_NODES.items():
        if name not in object_info:
            problems.append(f"{name}: not a node of this ComfyUI")
            continue
        info = object_info[name]
        for section, ours in (("required", req), ("optional", opt)):
            theirs = info.get("input", {}).get(section, {})
            if list(ours) != list(theirs):
                problems.append(f"{name}.{section}: table {list(ours)} != ComfyUI {list(theirs)}")
                continue
            for key, (typ, opts) in ours.items():
                real = theirs[key]
                rtyp, ropts = real[0], (real[1] if len(real) > 1 else {})
                if isinstance(typ, list):
                    choices = rtyp if isinstance(rtyp, list) else ropts.get("options")  # v3 nodes: "COMBO"
                    if choices is None:
                        problems.append(f"{name}.{key}: table has a combo, ComfyUI {rtyp}")
                    elif typ != [wf.FILE_COMBO] and typ != choices:
                        problems.append(f"{name}.{key}: combo {typ} != ComfyUI {choices}")
                elif typ != rtyp:
                    problems.append(f"{name}.{key}: type {typ} != ComfyUI {rtyp}")
                for bound in ("min", "max", "default"):
                    if bound in opts and opts[bound] != ropts.get(bound):
                        problems.append(f"{name}.{key}: {bound} {opts[bound]} != ComfyUI {ropts.get(bound)}")
        if list(outs) != list(info.get("output", [])):
            problems.append(f"{name}: outputs {list(outs)} != ComfyUI {info.get('output')}")
    assert not problems, "tests/workflow_format.py CORE_NODES disagrees with real ComfyUI:\n" + "\n".join(problems)


def _check_history(server: Server, name: str, entry: dict) -> dict:
    status = entry.get("status", {})
    errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
    assert status.get("status_str") == "success" and status.get("completed") and not errors, server.explain(
        f"{name}: status {status.get('status_str')!r}: {json.dumps(errors, indent=1)[:6000]}")
    outputs = entry.get("outputs", {})
    assert outputs, server.explain(f"{name}: finished with no outputs")
    for node_id, out in outputs.items():
        for item in out.get("images", []) + out.get("gifs", []):
            if item.get("type") == "output":
                f = server.base / "output" / item.get("subfolder", "") / item["filename"]
                assert f.is_file() and f.stat().st_size > 0, f"{name}: node {node_id} reported {f}, not written"
    return outputs


def test_core_control_workflow_runs(server):
    outputs = _check_history(server, "core smoke", server.run_prompt(CORE_SMOKE, "core smoke"))
    assert outputs["2"]["images"][0]["filename"].startswith("flipbook_core_smoke")


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_api_workflow_runs_in_comfyui(server, path):
    prompt = json.loads(path.read_text())
    absent = [n["inputs"]["image"] for n in prompt.values()
              if n.get("class_type") == "LoadImage" and not (server.base / "input" / n["inputs"]["image"]).is_file()]
    assert not absent, server.explain(f"{path.name}: LoadImage files {absent} are not in ComfyUI's input folder "
                                      f"(the pack copies its example inputs there when it loads)")
    t0 = time.monotonic()
    outputs = _check_history(server, path.name, server.run_prompt(prompt, path.name))
    print(f"[comfyui] {path.name}: success in {time.monotonic() - t0:.1f} s, outputs from nodes "
          f"{sorted(outputs)}")


OLD_API = [p for r in RELEASES for p in sorted((r / "api").glob("*.json"))]


@pytest.mark.parametrize("path", [p for p in OLD_API if p.stem in ("animatex", "flipsketch")],
                         ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_previous_release_api_prompt_is_migrated_and_runs(server, path):
    """An API client that still sends a prompt saved against an older release (renamed widgets: cfg,
    weight_dtype, iters) gets it migrated by the pack's on-prompt handler, and it runs."""
    prompt = json.loads(path.read_text())
    outputs = _check_history(server, f"old {path.name}", server.run_prompt(prompt, f"old {path.name}"))
    print(f"[comfyui] {path.parent.parent.name}/{path.name}: migrated and ran, outputs from nodes {sorted(outputs)}")


def test_migration_table_route(server):
    from comfyui_flipbook.nodes.migrations import frontend_table

    assert server.get("/flipbook/migrations") == frontend_table()


def test_template_route_lists_shipped_workflows(server):
    assert UI_WORKFLOWS, f"no UI-format workflows in {REPO / 'workflows'}"
    others = [n for n in TEMPLATE_FOLDER_NAMES if n != TEMPLATE_FOLDER and (REPO / n).is_dir()]
    assert not others, (f"{others} in the pack would be served as templates before / besides "
                        f"{TEMPLATE_FOLDER}/ (ComfyUI's app/custom_node_manager.py)")
    listed = server.get("/api/workflow_templates").get(PACK_NAME)
    assert sorted(listed or []) == sorted(p.stem for p in UI_WORKFLOWS), server.explain(
        f"template route lists {listed} for {PACK_NAME}")
    for p in UI_WORKFLOWS:
        served = server.get(f"/api/workflow_templates/{PACK_NAME}/{urllib.request.quote(p.name)}")
        assert served == json.loads(p.read_text()), f"template {p.name} served differently from the file"
    print(f"[comfyui] /api/workflow_templates lists {sorted(listed)}")


# --- the real frontend in headless Chromium ----------------------------------------------------------

_CHECK_LOADED = """
(wf) => {
  const reg = LiteGraph.registered_node_types;
  const unregistered = [...new Set(wf.nodes.map(n => n.type).filter(t => !(t in reg)))];
  const nodes = app.graph._nodes ?? app.graph.nodes;
  const broken = nodes.filter(n => n.has_errors || n.last_serialization)
                      .map(n => `${n.id}:${n.type || n.last_serialization?.type}`);
  const types = nodes.map(n => `${n.id}:${n.type}`).sort();
  return {unregistered, broken, types};
}
"""


@pytest.fixture(scope="module")
def browser_page(server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("frontend check skipped: the `playwright` Python package is not installed in this Python")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"frontend check skipped: no Chromium at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="flipbook-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, viewport={"width": 1600, "height": 1000},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic"])
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"{e}\n{getattr(e, 'stack', '')}"))
        page.goto(server.url + "/", timeout=120_000)
        page.wait_for_function(
            "() => window.app && window.app.graph && window.LiteGraph && window.app.vueAppReady"
            " && Object.keys(window.LiteGraph.registered_node_types).length > 0", timeout=180_000)
        if errors:  # e.g. frontend 1.27.10 throws in its own settings store at start-up; not ours
            print(f"[comfyui] page errors during frontend start-up (not checked): {errors}")
        errors.clear()
        page.page_errors = errors
        yield page
        ctx.close()


def test_frontend_loads_every_workflow(server, object_info, browser_page, tmp_path_factory):
    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    page = browser_page
    registered = set(page.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))
    ours = sorted(set(NODE_CLASS_MAPPINGS) - registered)
    assert not ours, server.explain(f"pack nodes not registered in the frontend: {ours}")
    shots = Path(os.environ.get("FLIPBOOK_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    assert UI_WORKFLOWS, f"no UI-format workflows in {REPO / 'workflows'}"
    for path in UI_WORKFLOWS:
        wf = json.loads(path.read_text())
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", wf)
        state = page.evaluate(_CHECK_LOADED, wf)
        assert not state["unregistered"], f"{path.name}: node types unknown to the frontend {state['unregistered']}"
        assert not state["broken"], f"{path.name}: nodes loaded as missing/broken {state['broken']}"
        assert state["types"] == sorted(f"{n['id']}:{n['type']}" for n in wf["nodes"]), (
            f"{path.name}: graph after load {state['types']}")
        page.evaluate("async () => { try { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); }"
                      " catch (e) {} app.canvas.setDirty(true, true); }")
        page.wait_for_timeout(500)
        shot = shots / f"{path.stem}.png"
        page.screenshot(path=str(shot))

        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert isinstance(prompt, dict) and prompt, f"{path.name}: graphToPrompt gave no output"
        expected = sorted(f"{n['id']}:{n['type']}" for n in wf["nodes"]
                          if n["type"] in object_info and n.get("mode", 0) not in (2, 4))
        got = sorted(f"{k}:{v['class_type']}" for k, v in prompt.items())
        assert got == expected, f"{path.name}: graphToPrompt class_types {got} != workflow's {expected}"
        twin = REPO / "workflows" / "api" / path.name
        if twin.is_file():
            api = json.loads(twin.read_text())
            diff = {k: (prompt.get(k, {}).get("inputs"), api.get(k, {}).get("inputs"))
                    for k in set(prompt) | set(api)
                    if prompt.get(k, {}).get("inputs") != api.get(k, {}).get("inputs")}
            assert not diff, (f"{path.name}: the frontend's prompt differs from {twin.name} "
                              f"(frontend, file): {json.dumps(diff, indent=1)[:4000]}")
        print(f"[comfyui] frontend: {path.name} loaded ({len(wf['nodes'])} nodes), "
              f"graphToPrompt -> {len(prompt)} nodes; screenshot {shot}")
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


def test_frontend_loads_previous_release_workflows(server, object_info, browser_page):
    """The previous release's UI files load with no missing node and the frontend's prompt is that
    release's API twin migrated (widgets added since keep their defaults)."""
    from comfyui_flipbook.nodes.migrations import migrate_api_prompt

    page = browser_page
    for release in RELEASES:
        for path in sorted(release.glob("*.json")):
            wf = json.loads(path.read_text())
            page.evaluate("async (wf) => { await app.loadGraphData(wf); }", wf)
            state = page.evaluate(_CHECK_LOADED, wf)
            assert not state["unregistered"] and not state["broken"], f"{release.name}/{path.name}: {state}"
            prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
            api = migrate_api_prompt(json.loads((release / "api" / path.name).read_text()))
            for nid, node in prompt.items():
                want = api[nid]["inputs"]
                declared = {**object_info[node["class_type"]]["input"].get("required", {}),
                            **object_info[node["class_type"]]["input"].get("optional", {})}
                extra = {k: v for k, v in node["inputs"].items() if k not in want}
                assert {k: v for k, v in node["inputs"].items() if k in want} == want, (
                    f"{release.name}/{path.name} node {nid}: {node['inputs']} != {want}")
                for k, v in extra.items():
                    assert len(declared[k]) > 1 and declared[k][1].get("default") == v, (
                        f"{release.name}/{path.name} node {nid}: new input {k}={v!r} is not its default")
            print(f"[comfyui] frontend: {release.name}/{path.name} loads and migrates")
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


def test_template_browser_shows_and_opens_workflows(server, browser_page, tmp_path_factory):
    """The user's path: Templates -> ComfyUI-Flipbook -> a card loads that workflow onto the canvas."""
    assert UI_WORKFLOWS, f"no UI-format workflows in {REPO / 'workflows'}"
    page = browser_page
    shots = Path(os.environ.get("FLIPBOOK_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    for path in UI_WORKFLOWS:
        page.evaluate("() => app.graph.clear()")
        page.keyboard.press("Escape")
        page.evaluate("async () => { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
        page.get_by_text(PACK_NAME, exact=True).first.click(timeout=30_000)
        card = page.get_by_text(path.stem, exact=True).first
        card.wait_for(state="visible", timeout=30_000)
        if path == UI_WORKFLOWS[0]:
            page.screenshot(path=str(shots / "template_browser.png"))
        card.click()
        want = sorted(f"{n['id']}:{n['type']}" for n in json.loads(path.read_text())["nodes"])
        page.wait_for_function(
            "(want) => JSON.stringify((app.graph._nodes ?? app.graph.nodes).map(n => `${n.id}:${n.type}`).sort())"
            " === JSON.stringify(want)", arg=want, timeout=30_000)
    print(f"[comfyui] template browser: {PACK_NAME} shows and opens {[p.stem for p in UI_WORKFLOWS]}; "
          f"screenshot {shots / 'template_browser.png'}")
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


def test_frontend_queues_and_shows_every_workflow(server, browser_page, tmp_path_factory):
    """What the Run button does (app.queuePrompt) for each UI workflow: it finishes in ComfyUI and the
    canvas shows the output nodes' results (screenshot <name>_run.png)."""
    assert UI_WORKFLOWS, f"no UI-format workflows in {REPO / 'workflows'}"
    page = browser_page
    shots = Path(os.environ.get("FLIPBOOK_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    for path in UI_WORKFLOWS:
        page.keyboard.press("Escape")
        page.evaluate("async (wf) => { await app.loadGraphData(wf); app.nodeOutputs = {}; }", json.loads(path.read_text()))
        before = set(server.get("/history"))
        page.evaluate("async () => { await app.queuePrompt(0, 1); }")
        deadline = time.monotonic() + PROMPT_TIMEOUT
        new = []
        while time.monotonic() < deadline:
            assert server.proc.poll() is None, server.explain(f"{path.name}: ComfyUI exited")
            hist = server.get("/history")
            new = [k for k in hist if k not in before and hist[k].get("status", {}).get("completed") is not None]
            if new:
                break
            time.sleep(0.5)
        assert len(new) == 1, server.explain(f"{path.name}: queued from the frontend, nothing finished "
                                             f"within {PROMPT_TIMEOUT:.0f} s")
        outputs = _check_history(server, f"{path.name} (frontend)", hist[new[0]])
        page.wait_for_function("(ids) => ids.every(id => app.nodeOutputs && app.nodeOutputs[id])",
                               arg=sorted(outputs), timeout=60_000)
        page.evaluate("async () => { try { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); }"
                      " catch (e) {} app.canvas.setDirty(true, true); }")
        page.wait_for_timeout(1500)
        shot = shots / f"{path.stem}_run.png"
        page.screenshot(path=str(shot))
        print(f"[comfyui] frontend run: {path.name} finished, canvas shows outputs of nodes {sorted(outputs)}; "
              f"screenshot {shot}")
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


# --- the editors on the picture (web/js/editors.js) in the real frontend --------------------------

_FOCUS_NODE = """async ([id, scale]) => {
  const n = app.graph.getNodeById(id);
  const ds = app.canvas.ds;
  ds.scale = scale;
  ds.offset[0] = -n.pos[0] + 80; ds.offset[1] = -n.pos[1] + 90;
  app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 700));
}"""
_WIDGET = "([id, name]) => app.graph.getNodeById(id).widgets.find(w => w.name === name).value"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"flipbook_{name}", REPO / "tests" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _client_point(page, node_id: int, p) -> list[float]:
    return page.evaluate("([id, p]) => flipbookEditor(id).clientPoint(p)", [node_id, p])


def _mouse_drag(page, a, b, steps: int = 10) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps)
        page.wait_for_timeout(25)
    page.mouse.up()


def _wait_editors(page, ids, timeout: float = 60.0) -> None:
    """Until the editors of these nodes show their picture and a whole preview animation."""
    js = ("(ids) => ids.map(id => { const e = flipbookEditor(id);"
          " return e ? {id, size: e.imageSize, frames: e.frames.length, quick: !!e.quick, status: e.status.textContent,"
          " error: e.error} : {id, missing: true}; })")
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(js, list(ids))
        if all(s.get("size") and s.get("frames") and not s.get("quick") for s in state):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"editors not ready after {timeout:.0f} s: {json.dumps(state)}")
        page.wait_for_timeout(250)


def _queue_and_wait(server, page, name: str) -> dict:
    before = set(server.get("/history"))
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + PROMPT_TIMEOUT
    while time.monotonic() < deadline:
        hist = server.get("/history")
        new = [k for k in hist if k not in before and hist[k].get("status", {}).get("completed") is not None]
        if new:
            return _check_history(server, name, hist[new[0]])
        time.sleep(0.5)
    pytest.fail(server.explain(f"{name}: queued from the frontend, nothing finished within {PROMPT_TIMEOUT:.0f} s"))


def _webp_frames(path: Path):
    import numpy as np
    import torch
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return torch.stack([torch.from_numpy(np.asarray(f.convert("RGB"), dtype=np.float32) / 255.0)
                            for f in ImageSequence.Iterator(im)])


def _saved_file(server, outputs: dict, node_id: str) -> Path:
    item = outputs[node_id]["images"][0]
    return server.base / "output" / item.get("subfolder", "") / item["filename"]


def _frontend_tag(page, vue: bool) -> str:
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")
    return f"{version}_{'nodes2' if vue else 'litegraph'}"


def _frontend_mode(page, vue: bool) -> None:
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || ''")
    if vue and tuple(int(x) for x in (version or "0.0").split(".")[:2]) < (1, 30):
        pytest.skip(f"Nodes 2.0 (Vue nodes) is checked with the newest frontend (FLIPBOOK_FRONTEND_ROOT), this is {version}")
    page.evaluate("async (on) => { try { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }"
                  " catch (e) { if (on) throw e; } }", vue)
    page.wait_for_timeout(300)


@pytest.mark.parametrize("vue", [False, True], ids=["litegraph", "nodes2"])
def test_editors_edit_on_the_picture_and_the_run_follows(server, browser_page, tmp_path_factory, vue):
    """In the shipped clipart workflow: two keypoints added by clicks on the picture, one dragged by
    mouse, a Bezier handle dragged; the widgets, graphToPrompt() and the queued run follow (the run's
    frames are the ones this process computes from the edited prompt, and differ from the unedited
    run's); the node stays put while editing; reload keeps the edits, the editor's undo takes the last
    one back. Screenshots of both editors (FLIPBOOK_SCREENSHOT_DIR)."""
    import torch

    page = browser_page
    _frontend_mode(page, vue)
    tag = _frontend_tag(page, vue)
    shots = Path(os.environ.get("FLIPBOOK_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    runner = _module("workflow_run")
    path = REPO / "workflows" / "clipart_bezier.json"
    try:
        page.keyboard.press("Escape")
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", json.loads(path.read_text()))
        _wait_editors(page, [2, 4])
        base_prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        base_points = json.loads(page.evaluate(_WIDGET, [2, "points_json"]))

        # 1. Keypoints (JSON): two clicks add two keypoints, then one is dragged
        page.evaluate(_FOCUS_NODE, [2, 1.0])
        pos0 = page.evaluate("() => [...app.graph.getNodeById(2).pos]")
        for p in ([256, 240], [256, 140]):
            page.mouse.click(*_client_point(page, 2, p))
            page.wait_for_timeout(150)
        _mouse_drag(page, _client_point(page, 2, [256, 240]), _client_point(page, 2, [292, 252]))
        page.wait_for_timeout(300)
        points = json.loads(page.evaluate(_WIDGET, [2, "points_json"]))
        assert points[:len(base_points)] == base_points and len(points) == len(base_points) + 2, points
        assert abs(points[-2][0] - 292) <= 1.5 and abs(points[-2][1] - 252) <= 1.5, points[-2]
        assert abs(points[-1][0] - 256) <= 1.5 and abs(points[-1][1] - 140) <= 1.5, points[-1]
        assert page.evaluate("() => [...app.graph.getNodeById(2).pos]") == pos0, "the node moved with the mouse"
        _wait_editors(page, [2])
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots / f"editor_keypoints_{tag}.png"))

        # 2. Bezier Trajectory: drag keypoint 4's first handle (the wave preset seeds it)
        page.evaluate(_FOCUS_NODE, [4, 1.0])
        ctrl = page.evaluate("() => flipbookEditor(4).state.control[4]")
        target = [ctrl[1][0] - 40, ctrl[1][1] - 60]
        _mouse_drag(page, _client_point(page, 4, ctrl[1]), _client_point(page, 4, target))
        page.wait_for_timeout(300)
        control = json.loads(page.evaluate(_WIDGET, [4, "control_json"]))
        assert control["relative"] is True and len(control["control"]) == len(points)
        assert [i for i, c in enumerate(control["control"]) if c is not None] == [4], control
        moved = [ctrl[1][0] - 40 - points[4][0], ctrl[1][1] - 60 - points[4][1]]
        assert all(abs(a - b) <= 1.5 for a, b in zip(control["control"][4][0], moved)), (control, moved)
        _wait_editors(page, [4])
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots / f"editor_trajectory_{tag}.png"))

        # 3. The API prompt carries the edits; the run renders them (a fresh seed, which the wave preset
        #    ignores, keeps ComfyUI's cache from answering for the nodes downstream)
        page.evaluate("(s) => { app.graph.getNodeById(4).widgets.find(w => w.name === 'seed').value = s; }",
                      int(time.time() * 1000) % 1_000_000 + 1)
        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert json.loads(prompt["2"]["inputs"]["points_json"]) == points
        assert json.loads(prompt["4"]["inputs"]["control_json"]) == control
        assert "flipbook_editor" not in prompt["2"]["inputs"] and "flipbook_editor" not in prompt["4"]["inputs"]
        outputs = _queue_and_wait(server, page, f"edited clipart ({tag})")
        got = _webp_frames(_saved_file(server, outputs, "7"))
        want = runner.run_api(prompt)[1]["7"]
        before = runner.run_api(base_prompt)[1]["7"]
        assert got.shape == want.shape
        err_edit, err_base = (got - want).abs().mean().item(), (got - before).abs().mean().item()
        assert err_edit < 0.02 and err_base > 2 * err_edit, (err_edit, err_base)
        assert not torch.equal(want, before)
        shown = outputs.get("6", {})                      # Mesh Render shows the animation in the node
        assert shown.get("animated") in ([True], (True,)) and shown["images"][0]["type"] == "temp", shown
        item = shown["images"][0]
        assert _webp_frames(server.base / "temp" / item.get("subfolder", "") / item["filename"]).shape[0] == got.shape[0]
        page.evaluate(_FOCUS_NODE, [6, 1.0])
        shown_js = ("() => { const n = app.graph.getNodeById(6); const el = document.querySelector("
                    "'[data-node-id=\"6\"] img'); return !!((el && el.complete && el.naturalWidth) || "
                    "(n.imgs?.[0]?.complete && n.imgs[0].naturalWidth)); }")
        for _ in range(40):                                # the screenshot shows it once it is loaded
            if page.evaluate(shown_js):
                break
            page.wait_for_timeout(250)
        else:
            print(f"[comfyui] {tag}: Mesh Render's preview not loaded in the node after 10 s (screenshot anyway)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"mesh_render_preview_{tag}.png"))

        # the editor follows its node's size
        page.evaluate(_FOCUS_NODE, [2, 0.8])
        w0 = page.evaluate("() => flipbookEditor(2).canvas.getBoundingClientRect().width")
        page.evaluate("() => { const n = app.graph.getNodeById(2); n.setSize([n.size[0] + 300, n.size[1] + 120]);"
                      " app.canvas.setDirty(true, true); }")
        page.wait_for_timeout(800)
        w1 = page.evaluate("() => flipbookEditor(2).canvas.getBoundingClientRect().width")
        assert w1 > w0 + 50, (w0, w1)

        # 4. A reloaded workflow keeps the edits; the editor's undo takes the handle back
        saved = page.evaluate("() => app.graph.serialize()")
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", saved)
        page.wait_for_function("(n) => flipbookEditor(4)?.state?.model?.points.length === n",
                               arg=len(points), timeout=30_000)
        assert json.loads(page.evaluate(_WIDGET, [4, "control_json"])) == control
        page.evaluate(_FOCUS_NODE, [4, 1.0])
        _mouse_drag(page, _client_point(page, 4, target), _client_point(page, 4, [target[0] + 20, target[1]]))
        page.wait_for_timeout(300)
        assert json.loads(page.evaluate(_WIDGET, [4, "control_json"])) != control
        page.evaluate("() => flipbookEditor(4).undo()")
        page.wait_for_timeout(300)
        assert json.loads(page.evaluate(_WIDGET, [4, "control_json"])) == control

        # 5. Keys and the right button stay in the editor: Delete removes the hovered keypoint (not the
        #    node), the graph's undo (Ctrl+Z) brings it back and the editor follows, a right click
        #    deletes, Shift-drag between two points adds a bone
        page.evaluate(_FOCUS_NODE, [2, 1.0])
        n = len(points)
        last = _client_point(page, 2, points[-1])
        page.mouse.click(*_client_point(page, 2, points[-2]))           # focus the editor (selects, adds nothing)
        page.mouse.move(*last)
        page.keyboard.press("Delete")
        page.wait_for_timeout(200)
        assert page.evaluate("() => !!app.graph.getNodeById(2)"), "Delete removed the node"
        assert len(json.loads(page.evaluate(_WIDGET, [2, "points_json"]))) == n - 1
        page.keyboard.press("Control+z")
        page.wait_for_timeout(200)
        assert json.loads(page.evaluate(_WIDGET, [2, "points_json"])) == points
        _wait_editors(page, [2])                          # the graph's undo reloads it: a new editor
        page.evaluate(_FOCUS_NODE, [2, 1.0])
        last = _client_point(page, 2, points[-1])
        page.mouse.click(*last, button="right")
        page.wait_for_timeout(200)
        assert len(json.loads(page.evaluate(_WIDGET, [2, "points_json"]))) == n - 1
        page.keyboard.press("Control+z")
        page.wait_for_timeout(200)
        assert json.loads(page.evaluate(_WIDGET, [2, "points_json"])) == points
        _wait_editors(page, [2])
        page.evaluate(_FOCUS_NODE, [2, 1.0])
        edges = json.loads(page.evaluate(_WIDGET, [2, "edges_json"]))
        page.keyboard.down("Shift")
        _mouse_drag(page, _client_point(page, 2, points[-2]), _client_point(page, 2, points[2]))
        page.keyboard.up("Shift")
        page.wait_for_timeout(200)
        assert json.loads(page.evaluate(_WIDGET, [2, "edges_json"])) == edges + [[n - 2, 2]]
        assert json.loads(page.evaluate(_WIDGET, [2, "points_json"])) == points, "a bone drag moves nothing"
    finally:
        if vue:
            _frontend_mode(page, False)
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


@pytest.mark.parametrize("vue", [False, True], ids=["litegraph", "nodes2"])
def test_warp_target_editor_writes_targets(server, browser_page, tmp_path_factory, vue):
    """The CPAB workflow: the keypoint and trajectory editors show there too; on the CPAB Keypoint Warp,
    with the trajectory unplugged, dragging a keypoint writes its target into targets_json."""
    page = browser_page
    _frontend_mode(page, vue)
    tag = _frontend_tag(page, vue)
    shots = Path(os.environ.get("FLIPBOOK_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        page.keyboard.press("Escape")
        wf = json.loads((REPO / "workflows" / "cpab_keypoint_warp.json").read_text())
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", wf)
        page.evaluate("() => { const n = app.graph.getNodeById(4); n.disconnectInput(n.findInputSlot('trajectory')); }")
        _wait_editors(page, [4])
        page.evaluate(_FOCUS_NODE, [4, 1.0])
        src = page.evaluate("() => flipbookEditor(4).state.sources[4]")
        _mouse_drag(page, _client_point(page, 4, src), _client_point(page, 4, [src[0] - 30, src[1] - 40]))
        page.wait_for_timeout(300)
        targets = json.loads(page.evaluate(_WIDGET, [4, "targets_json"]))
        assert abs(targets[4][0] - (src[0] - 30)) <= 1.5 and abs(targets[4][1] - (src[1] - 40)) <= 1.5, targets
        sources = page.evaluate("() => flipbookEditor(4).state.sources")
        assert [t for i, t in enumerate(targets) if i != 4] == [s for i, s in enumerate(sources) if i != 4]
        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert json.loads(prompt["4"]["inputs"]["targets_json"]) == targets and "trajectory" not in prompt["4"]["inputs"]
        _wait_editors(page, [4])
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots / f"editor_warp_{tag}.png"))
    finally:
        if vue:
            _frontend_mode(page, False)
    assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"
