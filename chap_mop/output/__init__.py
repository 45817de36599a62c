"""What a run leaves for people: tables and summary (``results``), ``report.html`` (``report``),
and the test report (``evaluation``)."""
