"""`tools deploy <verb>`: the chart through helm (pyhelm3), with helm's verbs and helm's meaning of each flag.

Data goes to stdout (a diff, JSON, a history table), progress and summaries to stderr, so
`tools deploy diff > plan.diff` holds only the diff.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from tools import settings
from tools.cli import options
from tools.cli.app import app, console
from tools.validation import Target as Hardware

deploy_app = typer.Typer(no_args_is_help=True, help="Deploy the chart with helm: upgrade (or install), diff, status, "
                                                    "history, rollback, uninstall.")
app.add_typer(deploy_app, name="deploy")


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def _target(release: str, namespace: str | None, helm: Path | None, kubeconfig: Path | None,
            kube_context: str | None, timeout: str = settings.DEFAULT_DEPLOY_TIMEOUT, chart: Path = settings.CHART_DIR,
            create_namespace: bool = False):
    from tools.deploy import helm as deployment

    return deployment.Target(release=release, namespace=namespace, helm=helm, kubeconfig=kubeconfig,
                             kube_context=kube_context, timeout=timeout, chart=chart,
                             create_namespace=create_namespace)


def _where(release: str, namespace: str | None) -> str:
    return f"release {release} in namespace {namespace or '(the kube context default)'}"


# Options every verb takes, spelled as helm spells them; defaults are described, never shown as a local path.
RELEASE = typer.Option(settings.DEFAULT_RELEASE, "--release", help="Helm release name.")
NAMESPACE = typer.Option(None, "--namespace", "-n", envvar=settings.NAMESPACE_ENV, show_default=False,
                         help="Namespace (default: the kube context's namespace, as helm does).")
HELM = typer.Option(None, "--helm", envvar=settings.HELM_ENV, show_default=False,
                    help="helm binary (default: helm on PATH, then the one scripts/install-helm.sh installed).")
KUBECONFIG = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", show_default=False,
                          help="Kubeconfig file (default: ~/.kube/config).")
KUBE_CONTEXT = typer.Option(None, "--kube-context", show_default=False,
                            help="Kubeconfig context (default: its current context).")
TIMEOUT = typer.Option(settings.DEFAULT_DEPLOY_TIMEOUT, "--timeout",
                       help="How long helm waits for the pods (a Go duration: 90s, 5m).")
OUTPUT = typer.Option(Output.TABLE, "--output", "-o", case_sensitive=False, help="Output format.")
CHART = typer.Option(settings.CHART_DIR, "--chart", show_default=False,
                     help=f"Chart folder (default: ./{settings.CHART_DIR.as_posix()}).")
VALUES = typer.Option([], "--values", "-f", metavar="FILE", show_default=False,
                      help="Values file (repeatable; later files win).")
SET = typer.Option([], "--set", metavar="KEY=VALUE", show_default=False,
                   help="Value as helm's --set reads it: a.b=1,c=2, list={x,y}, list[0]=x, a=x\\,y (an escaped comma), "
                        "a=null (removes a key). Repeatable; wins over --values.")
SET_STRING = typer.Option([], "--set-string", metavar="KEY=VALUE", show_default=False,
                          help="Like --set, but the value is always a string (repeatable).")
HARDWARE = typer.Option(Hardware.CPU, "--target",
                        help="Hardware of the node pool: the repository is validated for it; gpu also needs a model "
                             "with a KIND_GPU instance group and turns on the chart's gpu.enabled (see gpu.*).")
REPOSITORY = options.repository_option(f"Model repository to validate; its digest rolls the pods when it changes "
                                       f"(default: ./{settings.MODEL_REPOSITORY.as_posix()}).")


def _deploy_command(install_only: bool):
    """`upgrade` (install or upgrade, as `helm upgrade --install`) and `install` (a new release only, as helm's)."""

    def deploy(
        chart: Path = CHART, values: list[Path] = VALUES, set_values: list[str] = SET,
        set_string: list[str] = SET_STRING,
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Render the release against the cluster; change nothing."),
        create_namespace: bool = typer.Option(False, "--create-namespace",
                                              help="Create the namespace if it does not exist (without it: an error)."),
        repository: Path = REPOSITORY, hardware: Hardware = HARDWARE,
        release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
        kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT, timeout: str = TIMEOUT,
    ) -> None:
        from tools.deploy import helm as deployment

        target = _target(release, namespace, helm, kubeconfig, kube_context, timeout, chart, create_namespace)
        target.require_chart()
        user_values = deployment.load_values(target, values, set_values, set_string)
        planned = deployment.values_for(repository, user_values, hardware)
        deployment.check_repository(repository, hardware)
        verb = "rendering" if dry_run else "installing" if install_only else "installing/upgrading"
        with console.status(f"{verb} {_where(release, namespace)}; waiting up to {timeout} for pods to be ready..."):
            done = deployment.install_or_upgrade(target, planned, dry_run=dry_run, install_only=install_only)
        console.print(f"[green]{'dry run ok' if dry_run else 'deployed'}[/] {_where(release, done.release.namespace)}:"
                      f" revision {done.revision} ({done.status.value})")

    return deploy


deploy_app.command("upgrade", help="Validate the repository, then install or upgrade the release and wait for its "
                                   "pods (atomic: a rollout that does not become ready in --timeout is rolled back)."
                   )(_deploy_command(install_only=False))
deploy_app.command("install", help="Like upgrade, for a new release only: an existing release is refused, as helm "
                                   "install refuses it.")(_deploy_command(install_only=True))


@deploy_app.command()
def diff(
    chart: Path = CHART, values: list[Path] = VALUES, set_values: list[str] = SET, set_string: list[str] = SET_STRING,
    repository: Path = REPOSITORY, hardware: Hardware = HARDWARE,
    release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
    kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT,
) -> None:
    """Print on stdout the unified diff an upgrade would apply (Secret values hidden); change nothing."""
    from tools.deploy import helm as deployment

    target = _target(release, namespace, helm, kubeconfig, kube_context, chart=chart)
    target.require_chart()
    user_values = deployment.load_values(target, values, set_values, set_string)
    planned = deployment.values_for(repository, user_values, hardware)
    deployment.check_repository(repository, hardware)
    changes = deployment.diff(target, planned)
    typer.echo(changes, nl=False)
    console.print("no changes" if not changes else f"{changes.count('+++ ')} object(s) would change")


@deploy_app.command()
def status(
    output: Output = OUTPUT,
    release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
    kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT,
) -> None:
    """Show the release's current revision: number, status, namespace, time."""
    from tools.deploy import helm as deployment

    current = deployment.status(_target(release, namespace, helm, kubeconfig, kube_context))
    if output is Output.JSON:
        typer.echo(json.dumps(current.as_dict()))
    else:
        typer.echo(f"{_where(release, current.namespace)}: revision {current.revision} {current.status} "
                   f"(updated {current.updated})")


@deploy_app.command()
def history(
    output: Output = OUTPUT,
    release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
    kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT,
) -> None:
    """List the release's revisions, oldest first."""
    from tools.deploy import helm as deployment

    rows = deployment.history(_target(release, namespace, helm, kubeconfig, kube_context))
    if output is Output.JSON:
        typer.echo(json.dumps([row.as_dict() for row in rows]))
        return
    typer.echo(f"{'REVISION':>8}  {'STATUS':<16} {'UPDATED':<25} DESCRIPTION")
    for row in rows:
        typer.echo(f"{row.revision:>8}  {row.status:<16} {row.updated:<25} {row.description}")


@deploy_app.command()
def rollback(
    revision: int | None = typer.Argument(None, metavar="REVISION", show_default=False,
                                          help="Revision to return to (default: the previous one)."),
    release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
    kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT, timeout: str = TIMEOUT,
) -> None:
    """Roll the release back to a revision and wait for its pods."""
    from tools.deploy import helm as deployment

    target = _target(release, namespace, helm, kubeconfig, kube_context, timeout)
    with console.status(f"rolling back {_where(release, namespace)}; waiting up to {timeout} for pods..."):
        done = deployment.rollback(target, revision)
    console.print(f"[green]rolled back[/] {_where(release, done.release.namespace)}: now revision {done.revision} "
                  f"({done.status.value})")


@deploy_app.command()
def uninstall(
    release: str = RELEASE, namespace: str | None = NAMESPACE, helm: Path | None = HELM,
    kubeconfig: Path | None = KUBECONFIG, kube_context: str | None = KUBE_CONTEXT, timeout: str = TIMEOUT,
) -> None:
    """Remove the release and wait for its objects to be deleted."""
    from tools.deploy import helm as deployment

    with console.status(f"uninstalling {_where(release, namespace)}..."):
        deployment.uninstall(_target(release, namespace, helm, kubeconfig, kube_context, timeout))
    console.print(f"uninstalled {_where(release, namespace)}")
