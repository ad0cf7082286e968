"""Leaderboard: presets and families ranked by a Bradley-Terry fit of the pairwise votes, with 95%
intervals, and each preset's win rate against each other one."""

import pandas as pd
import streamlit as st

from t2i.service.ranking import fit_bradley_terry, fit_families, head_to_head
from t2i.web.common import store


def rows(ratings, name: str) -> list[dict]:
    return [{"rank": i, name: r.preset, "score": round(r.score), "95% interval": f"{r.low:.0f} to {r.high:.0f}",
             "votes": r.votes, "wins": r.wins, "ballots": round(r.ballots, 1)} for i, r in enumerate(ratings, 1)]


def matrix(matchups, order: list[str]) -> pd.DataFrame:
    """Row preset against column preset: its win rate and the votes between them; blank where the
    two never met."""
    cells = {(m.preset, m.opponent): f"{m.rate:.0%} of {m.votes}" for m in matchups}
    met = [p for p in order if any(p in pair for pair in cells)]
    return pd.DataFrame([[cells.get((p, q), "—" if p == q else "") for q in met] for p in met],
                        index=met, columns=met)


db = store()
st.title("Leaderboard")
records = db.vote_records()
ratings = fit_bradley_terry(records)
st.caption(f"{len(records)} votes. Scores on an Elo-like scale (1000 = average); ties count half; votes "
           "between images of the same preset, and 'both bad', do not move the ranking. All votes from one "
           "address on a pair of presets count as one ballot between them.")
if not ratings:
    st.info("No votes yet: vote on the Vote page.")
    st.stop()
st.dataframe(rows(ratings, "preset"), hide_index=True)

# Small tables as st.table: the preset ranking stays the page's one interactive grid (sortable, CSV).
st.subheader("Families")
st.caption("The same fit with each preset replaced by its family (guided, diffusion, gan; 'unknown' for a "
           "preset no longer offered). Votes between two presets of one family do not move it.")
families = fit_families(records)
st.table(pd.DataFrame(rows(families, "family")).set_index("rank"))

st.subheader("Head to head")
matchups = head_to_head(records, order=[r.preset for r in ratings])
if matchups:
    st.caption("How often the row's preset won against the column's, of the votes between the two (a tie "
               "counts half; every vote counts, however many came from one address).")
    st.table(matrix(matchups, [r.preset for r in ratings]))
else:
    st.caption("No votes between two different presets yet.")
