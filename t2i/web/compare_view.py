"""The Generate page's view of a compare group (layout only; t2i/service/compare.py decides what it shows):
the results side by side as they finish, each column with its own progress, labelled A-D with the
presets hidden until the visitor picks the best (or "all bad"); then the presets are shown."""

from __future__ import annotations

import streamlit as st

from t2i.service import compare, jobview
from t2i.service.ranking import VotePolicy
from t2i.web.common import client_address, plain

IMAGE_WIDTH = 256
ALL_BAD = "All bad"


def _column(db, column: compare.Column, revealed: bool) -> None:
    job = column.job
    st.markdown(f"#### {column.label}")
    if revealed:
        st.text(f"{column.label} was: {job.preset}")
    if job.status == "queued":
        st.info(f"Waiting in the queue at position {db.queue_position(job.id)}.")
    elif job.status == "running":
        st.progress(column.progress.fraction, text=column.progress.label)
        frame = db.latest_frame(job.id)
        if frame:
            st.image(frame[1], caption=f"step {frame[0]}", width=IMAGE_WIDTH)
    elif job.status == "done":
        result = db.result(job.id)
        if result.gone:
            st.warning(result.gone)
            return
        st.image(result.png if revealed else compare.pixels_only(result.png), width=IMAGE_WIDTH)
        st.caption(f"done in {jobview.describe(column.progress.elapsed)}")
        if revealed:  # before the vote the file name and parameters would name the preset
            st.download_button("Download PNG", result.png, file_name=f"t2i-{job.id}.png", mime="image/png",
                               key=f"png-{job.id}")
    elif job.status == "failed":
        st.error("This job failed:")
        error = job.error or "no reason recorded"
        plain(error if revealed else compare.blind_text(error, job.preset))   # an error may name the preset
    else:
        st.warning("This job was cancelled.")


def _vote(db, visitor: str, group: compare.GroupView, group_id: int, best: int | None, label: str) -> None:
    """A button's action: the group's verdict as pairwise votes, then a full rerun (presets shown)."""
    outcome = compare.vote_group(db, visitor, client_address(), [c.job for c in group.columns], best,
                                 VotePolicy.from_env())
    if outcome.recorded:
        line = ("Recorded: all bad." if best is None else f"Recorded: {label} is the best") + \
            (f" ({outcome.recorded} pairwise vote{'s' if outcome.recorded != 1 else ''})." if best is not None else "")
    elif outcome.already:
        line = "You already voted on these images; your first votes stand."
    else:
        line = None
    st.session_state["group_vote"] = (group_id, line, outcome.limit)
    st.rerun()


def show(db, visitor: str, group_id: int) -> None:
    group = compare.view(db, visitor, group_id)
    if group is None:
        return
    st.subheader(f"Comparing {len(group.columns)} presets")
    plain(group.prompt)
    st.caption(f"The same prompt and seed ({group.seed}) for each. "
               + ("" if group.revealed else "Which preset made which image is shown after you vote."))
    for place, column in zip(st.columns(len(group.columns)), group.columns):
        with place:
            _column(db, column, group.revealed)
    said = st.session_state.get("group_vote")
    if said and said[0] == group_id:
        if said[1]:
            st.success(said[1])
        if said[2]:
            st.warning(f"Not all recorded: {said[2]}.")
    if group.can_vote:
        waiting = len(group.columns) - len(group.done)
        st.markdown("**Which one matches the prompt best?**" +
                    (f" ({waiting} still to come: vote now on the finished ones, or wait.)" if group.active else ""))
        choices = [(c.label, c.job.id) for c in group.done] + [(ALL_BAD, None)]
        for place, (label, job_id) in zip(st.columns(len(choices)), choices):
            text = label if job_id is None else f"{label} is the best"
            if place.button(text, key=f"best-{group_id}-{label}"):
                _vote(db, visitor, group, group_id, job_id, label)
    mine = [c.job for c in group.columns if c.job.status in ("queued", "running") and c.job.submitter == visitor]
    if mine and st.button("Cancel the group", key=f"cancel-group-{group_id}"):
        for job in mine:
            db.cancel(job.id)
        st.rerun()
    key = f"group-status-{group_id}"
    statuses = tuple(c.job.status for c in group.columns)
    previous, st.session_state[key] = st.session_state.get(key), statuses
    if previous is not None and previous != statuses:
        st.rerun()  # a full rerun: whether the view refreshes itself depends on the statuses
