#!/usr/bin/env python3
"""Static checks of the Dockerfile and deploy/compose, where no container engine can build.

    containers.py dockerfile [PATH]   # checks PATH (default: the repository's Dockerfile)
    containers.py compose             # checks deploy/compose/compose.yaml's ties to the repository

This machine (and CI's) has no container daemon and no registry to pull base images from, so
the Dockerfile is checked instruction by instruction with Docker's own parser (the `dockerfile`
package wraps BuildKit's): the build stage's Rust is the crate's `rust-version`; `cargo build`
is `--locked`; every COPY source exists, and every file the crate reads at compile time
(`include_str!`/`include_bytes!`, build.rs, the `[[bin]]` paths) is inside what is copied, so
the build cannot miss a file; base images name a tag (never `latest`); the final stage runs as
a numeric non-root user it creates, exposes the daemon's port and starts `rq-retryd run`.
`compose` checks what the compose-spec schema cannot: the build context and Dockerfile, the
image tag (the crate's version), the mounted files, and the RQ version the worker installs.
Exit 1 with one line per problem.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)')
PORT = "9732"
RQ_PIN = "rq==2.12.0"


def cargo():
    return tomllib.loads((ROOT / "Cargo.toml").read_text())


def compile_time_files():
    """Every file the crate's build reads, relative to the repository root."""
    files = {"Cargo.toml", "Cargo.lock", "build.rs"}
    for target in cargo().get("bin", []):
        files.add(target.get("path", "src/main.rs"))
    for source in [ROOT / "build.rs", *sorted((ROOT / "src").rglob("*.rs"))]:
        for included in INCLUDE.findall(source.read_text()):
            path = (source.parent / included).resolve()
            files.add(str(path.relative_to(ROOT)))
    return files


def check_dockerfile(path):
    import dockerfile

    problems = []
    commands = dockerfile.parse_file(str(path))
    stages = []
    for c in commands:
        if c.cmd.upper() == "FROM":
            stages.append([c])
        elif stages:
            stages[-1].append(c)
        elif c.cmd.upper() != "ARG":
            problems.append(f"line {c.start_line}: {c.cmd} before the first FROM")
    if len(stages) != 2:
        return problems + [f"expected a build stage and a runtime stage, found {len(stages)} stages"]
    build, runtime = stages

    for stage in stages:
        image = stage[0].value[0]
        name, _, tag = image.partition(":")
        if not tag or tag == "latest":
            problems.append(f"line {stage[0].start_line}: base image {image} must name a tag")
    rust_version = cargo()["package"]["rust-version"]
    build_image = build[0].value[0]
    if not re.fullmatch(rf"rust:{re.escape(rust_version)}(\.\d+)?-slim-\w+", build_image):
        problems.append(
            f"line {build[0].start_line}: the build stage's image {build_image} must be the crate's "
            f"rust-version {rust_version} (Cargo.toml)"
        )
    alias = build[0].value[2] if len(build[0].value) == 3 else None

    copied = []
    for c in build:
        if c.cmd.upper() == "COPY" and not any(f.startswith("--from") for f in c.flags):
            *sources, _dest = c.value
            for source in sources:
                if not (ROOT / source).exists():
                    problems.append(f"line {c.start_line}: COPY {source}: no such file in the repository")
                copied.append(source.rstrip("/"))
    for needed in sorted(compile_time_files()):
        if not any(needed == c or needed.startswith(c + "/") for c in copied):
            problems.append(f"the build reads {needed}, which no COPY of the build stage brings in")
    runs = " && ".join(" ".join(c.value) for c in build if c.cmd.upper() == "RUN")
    if "cargo build --release --locked" not in runs:
        problems.append("the build stage must run `cargo build --release --locked`")

    users = [c for c in runtime if c.cmd.upper() == "USER"]
    if not users:
        problems.append("the runtime stage has no USER: it would run as root")
    else:
        user = users[-1].value[0]
        uid = user.split(":")[0]
        if not uid.isdigit() or uid == "0":
            problems.append(f"USER {user}: must be a numeric non-root uid (Kubernetes' runAsNonRoot checks numbers)")
        created = " ".join(" ".join(c.value) for c in runtime if c.cmd.upper() == "RUN")
        if f"--uid {uid}" not in created:
            problems.append(f"USER {user}: the stage does not create uid {uid}")
    binary = None
    for c in runtime:
        if c.cmd.upper() == "COPY" and f"--from={alias}" in c.flags:
            if c.value[0].endswith("/target/release/rq-retryd"):
                binary = c.value[-1]
    if binary is None:
        problems.append(f"the runtime stage does not COPY --from={alias} the release binary")
    entry = [c.value for c in runtime if c.cmd.upper() == "ENTRYPOINT"]
    if entry[-1:] != [(binary,)]:
        problems.append(f"ENTRYPOINT {entry[-1:] or 'missing'} must be the copied binary {binary}")
    cmd = [c.value for c in runtime if c.cmd.upper() == "CMD"]
    if cmd[-1:] != [("run",)]:
        problems.append(f"CMD {cmd[-1:] or 'missing'} must be [\"run\"]")
    exposed = [v for c in runtime if c.cmd.upper() == "EXPOSE" for v in c.value]
    if PORT not in exposed:
        problems.append(f"the runtime stage must EXPOSE {PORT}")
    return problems


def check_compose():
    import yaml

    problems = []
    directory = ROOT / "deploy" / "compose"
    compose = yaml.safe_load((directory / "compose.yaml").read_text())
    services = compose["services"]
    retryd = services["rq-retryd"]
    context = (directory / retryd["build"]["context"]).resolve()
    if context != ROOT or not (context / retryd["build"]["dockerfile"]).is_file():
        problems.append(f"rq-retryd's build must be the repository's Dockerfile, is {retryd['build']}")
    version = cargo()["package"]["version"]
    if retryd.get("image") != f"rq-retryd:{version}":
        problems.append(f"rq-retryd's image {retryd.get('image')} must be tagged with the crate's version {version}")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (directory / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
        command = " ".join(service.get("command", []))
        if "pip install" in command and RQ_PIN not in command:
            problems.append(f"{name}: must install {RQ_PIN}, the RQ the tests run")
    env = retryd.get("environment", {})
    for variable in ["REDIS_URL", "PORT", "RQ_RETRYD_AUTH_TOKEN", "RQ_RETRYD_CONFIG"]:
        if variable not in env:
            problems.append(f"rq-retryd: {variable} is not set")
    if str(env.get("PORT")) != PORT:
        problems.append(f"rq-retryd: PORT must be {PORT}")
    return problems


def main(argv):
    if argv[:1] == ["dockerfile"] and len(argv) <= 2:
        problems = check_dockerfile(pathlib.Path(argv[1]) if len(argv) == 2 else ROOT / "Dockerfile")
    elif argv == ["compose"]:
        problems = check_compose()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
