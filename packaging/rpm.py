#!/usr/bin/env python3
"""Writes the rpm's asset list (TOML, for cargo generate-rpm --metadata-overwrite) from the
one description of the files, [package.metadata.deb] in agent/Cargo.toml: the same files
and modes; /etc files become %config(noreplace), /usr/share/doc files %doc; the unit,
which cargo-deb adds by itself, is added; zsh completions go where rpm distributions look."""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--no-deps", "--format-version", "1",
     "--manifest-path", sys.argv[1] if len(sys.argv) > 1 else "agent/Cargo.toml"]))
pkg = next(p for p in meta["packages"] if p["name"] == "berth-agent")
deb = pkg["metadata"]["deb"]
units = deb["systemd-units"]
assets = list(deb["assets"]) + [{
    "source": units["unit-scripts"].rstrip("/") + "/" + units["unit-name"] + ".service",
    "dest": "/usr/lib/systemd/system/" + units["unit-name"] + ".service",
    "mode": "644",
}]


def q(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


print("assets = [")
for a in assets:
    dest = a["dest"].replace("/usr/share/zsh/vendor-completions/", "/usr/share/zsh/site-functions/")
    extra = ""
    if dest.startswith("/etc/"):
        extra = ', config = "noreplace"'
    elif dest.startswith("/usr/share/doc/"):
        extra = ", doc = true"
    print(f'  {{ source = {q(a["source"])}, dest = {q(dest)}, mode = {q(a["mode"])}{extra} }},')
print("]")
print("description = " + q(deb["extended-description"]))
