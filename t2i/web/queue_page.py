"""Queue status: counts per state, executors seen recently, the latest jobs."""

import streamlit as st

from t2i.store import default_url, open_store


@st.cache_resource
def _store():
    return open_store(default_url())


store = _store()
st.title("Queue")
counts = store.counts()
for column, (status, n) in zip(st.columns(len(counts)), counts.items()):
    column.metric(status, n)

done_hour = store.finished_since(3600)
st.caption(f"Throughput: {store.finished_since(60)} finished in the last minute, {done_hour} in the last hour.")

st.subheader("Executors seen in the last minute")
workers = store.workers(seen_within=60)
if workers:
    import time

    st.dataframe([{"executor": w["id"], "host": w["host"], "device": w["device"], "current job": w["job_id"],
                   "last seen": f"{time.time() - w['seen_at']:.0f} s ago"} for w in workers], hide_index=True)
else:
    st.info("No executor is running. Start one with `bash run_executor.sh cpu` (or a GPU index).")

st.subheader("Latest jobs")
jobs = store.jobs(limit=20)
# Prompts are data: shown in a dataframe (plain text), never as markdown or HTML.
st.dataframe([{"id": j.id, "status": j.status, "preset": j.preset, "prompt": j.prompt,
               "progress": f"{j.step}/{j.total}", "error": j.error or ""} for j in jobs], hide_index=True)
st.caption("Submit from the shell: `python -m t2i submit \"a prompt\" --preset NAME`.")
