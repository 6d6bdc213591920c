"""Writes the copies of integrations/install.sh and run.sh that cannot be
references: the CircleCI orb's `install` and `pipeline` steps (an orb is one
file; `<<` is written `\\<<`, CircleCI's escape) and the Jenkins library's
resource (Jenkins refuses a library with a symlink, or a resource outside
its Library Path). check_examples.py fails when a copy drifts; run this
after editing either script:

    python3 integrations/sync_copies.py
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def write(rel, text):
    with open(os.path.join(ROOT, rel), "w") as f:
        f.write(text)


def block(script, indent):
    """The script as a YAML block scalar's lines, `<<` escaped."""
    pad = " " * indent
    return "".join(pad + line if line.strip() else line
                   for line in script.replace("<<", "\\<<").splitlines(True))


def main():
    orb = read("integrations/circleci/orb.yml")
    for step, script, prelude in (
        ("Install pipeline", "integrations/install.sh",
         'export PIPELINE_LINK_DIR="$HOME/.local/pipeline/bin"\n'),
        ("pipeline << parameters.command >>", "integrations/run.sh", ""),
    ):
        # From the step's `command: |` to the next line indented less.
        start = orb.index(f"name: {step}")
        body = orb.index("command: |\n", start) + len("command: |\n")
        end = re.compile(r"^ {0,11}\S", re.M).search(orb, body).start()
        orb = orb[:body] + block(prelude + read(script), 12) + orb[end:]
    write("integrations/circleci/orb.yml", orb)
    write("integrations/jenkins/resources/pipeline/install.sh", read("integrations/install.sh"))


if __name__ == "__main__":
    main()
