"""The Carbon page's web app (:mod:`.app`) and the runs it lists (:mod:`.runs_view`)."""
