"""Vote: two finished images side by side, presets hidden until the vote; then the next pair."""

import random

import streamlit as st

from t2i.service import compare
from t2i.service.ranking import VoteLimit, VotePolicy, cast_vote, next_pair
from t2i.web.common import client_address, plain, store, visitor_id

CHOICES = {"left": "Left is better", "right": "Right is better", "tie": "About the same", "both_bad": "Both bad"}

visitor = visitor_id()
address = client_address()
policy = VotePolicy.from_env()
db = store()
st.title("Vote")
st.caption("Which image matches its prompt better? The presets are shown after you vote.")

state = st.session_state
if state.get("vote_outcome"):
    # Just voted: reveal the presets, then offer the next pair.
    left_job, right_job = state["vote_pair"]
    outcome = state["vote_outcome"]
    if outcome == "refused":
        st.warning("You already voted on this pair; your first vote stands.")
    elif outcome == "limited":
        st.warning(f"Not recorded: {state.pop('vote_limit', 'a vote limit was reached')}.")
    else:
        st.success(f"Recorded: {CHOICES[outcome].lower()}.")
    a, b = st.columns(2)
    a.text(f"Left was: {db.get(left_job).preset}")
    b.text(f"Right was: {db.get(right_job).preset}")
    if st.button("Next pair", type="primary"):
        state.update(vote_pair=None, vote_outcome=None)
        st.rerun()
    st.stop()

if state.get("vote_pair") is None:
    state["vote_pair"] = next_pair(db, visitor, random.Random(), address=address, max_per_pair=policy.max_per_pair)
pair = state["vote_pair"]
if pair is None:
    st.info("No pair left to vote on: come back when more images are finished.")
    st.stop()

left_job, right_job = pair
jobs = [db.get(job_id) for job_id in pair]
if jobs[0].group_id is not None and jobs[0].group_id == jobs[1].group_id:
    st.caption("From a compare group: one prompt and one seed, drawn by two presets.")
for column, job_id, job in zip(st.columns(2), pair, jobs):
    result = db.result(job_id)
    with column:
        if result.gone:
            st.warning(result.gone)
        else:
            st.image(compare.pixels_only(result.png), width="stretch")   # its text would name the preset
        plain(job.prompt)

for column, (choice, label) in zip(st.columns(len(CHOICES)), CHOICES.items()):
    if column.button(label, key=f"vote-{choice}"):
        try:
            state["vote_outcome"] = choice if cast_vote(db, visitor, address, left_job, right_job, choice,
                                                        policy) else "refused"
        except VoteLimit as limit:
            state.update(vote_outcome="limited", vote_limit=str(limit))
        st.rerun()
