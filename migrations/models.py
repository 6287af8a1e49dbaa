"""Every table module, imported so that autogenerate sees the whole schema."""

import core.accounts.models
import core.audit
import core.auth.models
import core.platform  # noqa: F401
import instruments.models  # noqa: F401
