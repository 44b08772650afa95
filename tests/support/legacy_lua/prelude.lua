local FIELD = {app = 'app', status = 'status', installed = 'installed', updated = 'updated', generation = 'gen', iat = 'iat', revoked_until = 'revoked_until', unverified = 'unverified', cred_piece = 'cred.', legacy_cred = 'cred'}
local STATUS = {active = 'active', revoked = 'revoked'}
local EVENT = {installed = 'account.installed', reinstalled = 'account.reinstalled', verified = 'account.verified', revoked = 'account.revoked', reactivated = 'account.reactivated', deleted = 'account.deleted'}
