"""How the project names configurations and durations for people, on the console and in reports."""

SHORT_NAMES = {"lr": "lr {}", "l2_reg": "l2 {}", "win_size": "{} min", "amp_factor": "amp {}"}


def describe(params: dict) -> str:
    """A configuration in a few words: ``lr 0.001, l2 0.0001, 7 min, amp 2``."""
    return ", ".join(SHORT_NAMES.get(name, name + " {}").format(f"{value:g}" if isinstance(value, float) else value)
                     for name, value in params.items())


def format_duration(seconds: float) -> str:
    """``3 h 12 min``, ``4 min 05 s`` or ``12 s``."""
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
