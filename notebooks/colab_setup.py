# Colab set-up: runs only on Google Colab and does nothing anywhere else.
# (The same cell in every notebook, kept equal to notebooks/colab_setup.py by `python -m lepton_nb sync-notebooks`.)
import sys

if "google.colab" in sys.modules:
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"This Colab runtime runs Python {sys.version_info.major}.{sys.version_info.minor}; lepton_nb's pinned stack "
            "(TensorFlow 2.14.1, TensorFlow Federated 0.87.0, tensorflow-privacy 0.9.0) installs only on Python 3.11. "
            "To pin a Python 3.11 runtime: open the command palette (Ctrl+Shift+P), choose 'Change runtime version', "
            "select 2025.07 (it has Python 3.11), then run the notebook again from the top. Colab resets the runtime "
            "version with each new session, so repeat this every time. The supported route is local: clone "
            "https://github.com/lepton-nb/lepton_nb and run `make lab`."
        )
    import os
    import subprocess

    _repo = "/content/lepton_nb"
    if not os.path.isdir(_repo):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/lepton-nb/lepton_nb.git", _repo], check=True)
    _pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run(_pip + ["-r", f"{_repo}/requirements/lock.txt"], check=True)  # the exact lock, as `make` installs it
    subprocess.run(_pip + ["-e", _repo], check=True)
    sys.path.insert(0, _repo)
    os.chdir(f"{_repo}/notebooks")
