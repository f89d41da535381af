"""Kill the MQTT broker outright (SIGKILL) while ingest is behind: only what the broker's persistence allows is lost.

Mosquitto keeps sessions and queued QoS 1 messages in memory and writes them to its persistence file every
``autosave_interval`` seconds (10 in ``deploy/mosquitto.conf``) and at a clean stop. A crash therefore loses the
messages it acknowledged to publishers since its last save and had not yet handed to a subscriber that stored them.
To make that window visible, ingest is held behind by a table lock (its writes wait, the broker queues the stream)
when the broker is killed.

The test checks the documented bound, message by message: every reading the broker acknowledged before its last
save (as its log shows, to the second) is stored, exactly once; only readings acknowledged after it may be missing.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from twin.store.db import DictConnection, connect

from ..conftest import wait_for
from .harness import (
    Load,
    LoadPublisher,
    RestartableMosquitto,
    lifeline_env,
    lost_readings,
    report,
    row_count,
    start_ingest_process,
    time_to_recover,
    wait_stored,
)

pytestmark = pytest.mark.integration

READINGS = 12_000
RATE_PER_S = 800.0
BEHIND_S = 4.0
"""How long ingest is held behind before the broker is killed, seconds."""
_SAVED = re.compile(r"^(\d+): Saving in-memory database", re.MULTILINE)


def test_broker_crash_loses_only_messages_acknowledged_after_its_last_save(
    pg_url: str, schema: str, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    mosquitto = RestartableMosquitto(tmp_path)
    mosquitto.start()
    env = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=mosquitto.config,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_client_id=f"ingest-bcrash-{uuid.uuid4().hex[:8]}",
    )
    load = Load(READINGS, prefix)
    ingest = start_ingest_process(env)
    publisher = LoadPublisher(
        mosquitto.config, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}"
    ).start()
    try:
        # The broker's first autosave holds both sessions and the subscription.
        wait_for(lambda: _SAVED.search(mosquitto.log.read_text()), timeout=30, what="Mosquitto's first save")
        with connect(pg_url, schema=schema) as locker:
            locker.execute("LOCK TABLE readings IN EXCLUSIVE MODE")
            time.sleep(BEHIND_S)
            saves = [int(t) for t in _SAVED.findall(mosquitto.log.read_text())]
            killed = (publisher.sent, publisher.acked(), row_count(db))
            killed_at = time.time()
            mosquitto.stop(signal.SIGKILL)
            mosquitto.start()
            back_at = time.monotonic()
        recover_s = time_to_recover(db, publisher, back_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=60, quiet_s=5.0)
        lost = lost_readings(db, load)
    finally:
        publisher.close()
        ingest.stop()
        mosquitto.stop()
    last_save = saves[-1]
    # Acknowledged before the second of the last save: certainly in the persistence file (or already delivered).
    lost_before_save = [k for k in lost if (publisher.acked_at(k) or 0) < last_save]
    at_risk = sum(1 for k in range(READINGS) if last_save <= (publisher.acked_at(k) or 0) <= killed_at)
    report(
        f"broker crash (SIGKILL) with ingest {BEHIND_S:.0f} s behind, autosave_interval 10 s",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=ingest.duplicates_ignored(),
        note=(
            f"killed with {killed[2]} stored of {killed[0]} sent ({killed[1]} acked by the broker), "
            f"{killed_at - last_save:.0f} s after its last save; {at_risk} acked between the save and the kill; "
            f"every lost reading was acked after the last save: {not lost_before_save}"
        ),
    )
    assert 0 < killed[2] < READINGS
    assert acked == READINGS  # the publisher sent again whatever the broker had not acknowledged
    assert lost_before_save == [], f"{len(lost_before_save)} readings acknowledged before the last save were lost"
    assert tally.duplicated == tally.unexpected == tally.wrong_value == 0, tally
    assert len(lost) <= at_risk
