"""Queue status: counts per state, executors seen recently, the latest jobs.

Visitors see no host names or process ids (executor ids are `host-pid-...`) and only the first line of
a job's error; the operator (t2i/web/guard.py) sees them whole. Every text cell is escaped for
spreadsheets, because the table's "Download as CSV" exports the cells as they are."""

import time

import streamlit as st

from t2i.service.compare import HIDDEN, blind_groups, blind_text
from t2i.web.common import store, visitor_id
from t2i.web.guard import csv_safe, is_operator, short_error

db = store()
operator = is_operator()
st.title("Queue")
counts = db.counts()
for column, (status, n) in zip(st.columns(len(counts)), counts.items()):
    column.metric(status, n)

done_hour = db.finished_since(3600)
st.caption(f"Throughput: {db.finished_since(60)} finished in the last minute, {done_hour} in the last hour.")

st.subheader("Executors seen in the last minute")
workers = db.workers(seen_within=60)
if workers:
    rows = []
    for i, w in enumerate(workers, 1):
        row = {"executor": w["id"], "host": w["host"]} if operator else {"executor": f"#{i}"}
        row.update({"device": w["device"], "current job": w["job_id"],
                    "last seen": f"{time.time() - w['seen_at']:.0f} s ago"})
        rows.append({k: csv_safe(v) for k, v in row.items()})
    st.dataframe(rows, hide_index=True)
else:
    st.info("No executor is running. Start one with `bash run_executor.sh cpu` (or a GPU index).")

st.subheader("Latest jobs")
jobs = db.jobs(limit=20)
# A compare group's presets stay hidden until this visitor votes on it (t2i/service/compare.py): here a
# row's id and preset side by side would tell which image is which.
blind = blind_groups(db, visitor_id(), [j.group_id for j in jobs])


def row(j) -> dict:
    hidden = j.group_id in blind
    error = short_error(j.error, full=operator)
    return {"id": j.id, "status": j.status, "preset": csv_safe(HIDDEN if hidden else j.preset),
            "prompt": csv_safe(j.prompt), "progress": f"{j.step}/{j.total}",
            "error": csv_safe(blind_text(error, j.preset) if hidden else error)}


# Prompts are data: shown in a dataframe (plain text), never as markdown or HTML.
st.dataframe([row(j) for j in jobs], hide_index=True)
st.caption("Submit from the shell: `python -m t2i submit \"a prompt\" --preset NAME`.")
