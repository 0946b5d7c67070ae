"""Streamlit entry: navigation over pages/, nothing heavy here."""
import streamlit as st

st.set_page_config(page_title="Concept render jobs", page_icon="🏛️", layout="wide")
navigation = st.navigation([
    st.Page("pages/render.py", title="Render", icon="🎨", default=True),
    st.Page("pages/monitor.py", title="Monitor", icon="📊"),
])
navigation.run()
