"""The live page: status, backups, jobs and the log, read-only, for a browser.

One WSGI application (``app``) serves it twice: inside DSM as the package's CGI program
(``cgi``, DSM's login checked with its ``authenticate.cgi``), and outside DSM with
``nas-receiver serve`` (``serve``, a random token in ``data_dir``).  It only reads the
catalog and the log file; the daemon never waits for it.
"""
