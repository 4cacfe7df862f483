"""This process's resident memory as Linux reports it, for the memory columns of benchmarks."""

from __future__ import annotations

__all__ = ['reset_peak_resident', 'status_bytes']


def status_bytes(field: str = 'VmRSS') -> int | None:
    """A memory field of ``/proc/self/status`` in bytes (``VmRSS`` now, ``VmHWM`` peak).

    Returns:
        The value, or ``None`` off Linux or when the field is missing.
    """
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def reset_peak_resident() -> bool:
    """Sets this process's peak resident memory (``VmHWM``) to the current one (Linux).

    Returns:
        ``False`` where it cannot (another system, no permission).
    """
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as handle:
            handle.write('5')
        return True
    except OSError:
        return False
