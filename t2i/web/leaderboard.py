"""Leaderboard: presets ranked by a Bradley-Terry fit of the pairwise votes, with 95% intervals."""

import streamlit as st

from t2i.ranking import fit_bradley_terry
from t2i.web.common import store

db = store()
st.title("Leaderboard")
records = db.vote_records()
ratings = fit_bradley_terry(records)
st.caption(f"{len(records)} votes. Scores on an Elo-like scale (1000 = average); ties count half; votes "
           "between images of the same preset, and 'both bad', do not move the ranking. All votes from one "
           "address on a pair of presets count as one ballot between them.")
if not ratings:
    st.info("No votes yet: vote on the Vote page.")
else:
    st.dataframe([{"rank": i, "preset": r.preset, "score": round(r.score), "95% interval":
                   f"{r.low:.0f} to {r.high:.0f}", "votes": r.votes, "wins": r.wins, "ballots": round(r.ballots, 1)}
                  for i, r in enumerate(ratings, 1)], hide_index=True)
