"""The UI's routes, registered on one blueprint (`bp`) by importing their modules.

Every view is `@public` to the API's bearer check; `guard.current_viewer()` authenticates
the session instead, and `guard.check_post` guards every form.
"""

from registry.ui import actions, live_pages, pages, session_views
from registry.ui.blueprint import bp

__all__ = ["actions", "bp", "live_pages", "pages", "session_views"]
