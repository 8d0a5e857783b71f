"""A quick look at whether the Hugging Face hub answers, before a hub task starts downloading.

Without a network, datasets and transformers retry each request with growing pauses, and the user
waits minutes (about 25 s per file even when the connection is refused at once) for an error. One short
request first turns that into one clear line within seconds. With HF_HUB_OFFLINE=1 nothing is asked:
the libraries then read their cache and fail fast by themselves.
"""

from __future__ import annotations

import functools
import re
import urllib.error
import urllib.request
from pathlib import Path

from peftbench.errors import BadInput

PROBE_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path: from_pretrained and load_dataset would ask the hub."""
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


@functools.cache
def _unreachable_reason(endpoint: str) -> str | None:
    """None when the endpoint answers at all (any HTTP status), else why it did not."""
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:  # an answer, even an error status, means the hub is reachable
        return None
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def check_reachable(what: str, *, local_copy: str) -> None:
    """BadInput at once when `what` needs the hub and the hub does not answer within a few seconds.

    `local_copy` says how to point the run at local files instead (a full clause).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    reason = _unreachable_reason(constants.ENDPOINT)
    if reason is not None:
        raise BadInput(
            f"{what} needs the Hugging Face hub, but {constants.ENDPOINT} does not answer within "
            f"{PROBE_TIMEOUT_S:g} s ({reason}): {local_copy}, set HF_ENDPOINT to a mirror, or set "
            f"HF_HUB_OFFLINE=1 to use what is cached"
        )
