"""Live progress of a local run: a rich table on a terminal, one line per event elsewhere (CI, logs)."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pioneer.api.models import Phase, TrainingAttempt
from pioneer.runner.local import Event, LocalRunner

PHASE_STYLE = {
    Phase.pending.value: "dim",
    Phase.running.value: "yellow",
    Phase.succeeded.value: "green",
    Phase.failed.value: "red",
}


def attempts_table(attempts: list[TrainingAttempt], metric: str, progress: dict | None = None, best: str | None = None) -> Table:
    table = Table(title=None, expand=False, show_lines=False)
    for col in ("attempt", "iter", "parent", "modification", "phase", "progress", metric, "loss"):
        table.add_column(col, overflow="fold", max_width=48 if col == "modification" else None)
    for a in sorted(attempts, key=lambda a: (a.spec.iteration, a.metadata.name)):
        st = a.status
        prog = (progress or {}).get(a.metadata.name) or {}
        bar = ""
        if prog.get("total_steps"):
            bar = f"{prog.get('step', 0)}/{prog['total_steps']} steps"
        elif prog.get("phase") and st and st.phase == Phase.running.value:
            bar = prog["phase"]
        score = f"{st.score:.4f}" if st and st.score is not None else ""
        name = Text(a.metadata.name, style="bold" if a.metadata.name == best else "")
        table.add_row(name, str(a.spec.iteration), a.spec.parent or "", a.spec.modification,
                      Text(st.phase if st else "", style=PHASE_STYLE.get(st.phase if st else "", "")), bar, score,
                      "" if not st or st.train_loss is None else f"{st.train_loss:.3g}")
    return table


class Display:
    """Chooses the live table on a terminal and plain event lines otherwise."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True, markup=False, emoji=False)  # event text is data
        self.live_mode = self.console.is_terminal and not quiet
        self.quiet = quiet
        self.live: Live | None = None
        self.started = time.monotonic()

    def event(self, ev: Event) -> None:
        if self.quiet and ev.kind not in ("complete", "failed"):
            return
        style = {"decision": "cyan", "succeeded": "green", "failed": "red", "complete": "bold", "retry": "yellow"}.get(ev.kind, "")
        elapsed = time.monotonic() - self.started
        line = Text.assemble((f"[{elapsed:6.0f}s] ", "dim"), (f"{ev.kind:<9} ", style), ev.message)
        if self.live is not None:
            self.live.console.print(line)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    def tick(self, runner: LocalRunner) -> None:
        if not self.live_mode:
            return
        st = runner.status
        header = Text.assemble(
            ("pioneer ", "bold"), f"{runner.name}  ",
            f"baseline {st.baseline_score:.4f}  " if st.baseline_score is not None else "",
            (f"best {st.best_score:.4f} ({st.best_attempt})  " if st.best_score is not None else ""),
            f"tau {runner.spec.gate.tau}  attempts {st.attempts.total}/{runner.spec.search.max_attempts}",
        )
        body = Group(header, attempts_table(list(runner.attempts.values()), runner.spec.task.metric, runner.progress(), st.best_attempt))
        if self.live is None:
            self.live = Live(body, console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        else:
            self.live.update(body)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
