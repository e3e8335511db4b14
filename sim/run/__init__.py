"""``pushsim run``: start every component, run the rehearsal, judge it and write the report."""
