# deskbridge access policy: owned by the IAM team, evaluated for every normalized request.
#
# The ticket contributes the ask (who, which entitlement on which system, what kind, why, how
# long). The facts come from authoritative sources that deskbridge adds before deciding:
#   input.catalog  — the admin-owned entitlement catalog's entry: tier, owner, environment,
#                    maximum duration, separation-of-duties conflicts (null fields: not listed);
#   input.context  — the identity directory's answers for requester, beneficiary, named
#                    approver and NHI owner: active, manager, type, groups and the catalog
#                    entitlements those groups represent (null person: unknown to the directory);
#   input.claims   — what the ticket said about privilege and environment: evidence only, never
#                    read here.
# input.entitlement.privileged and input.target.environment are the catalog's values.
#
# outcome is approve | deny | review (route_to names who must approve) | needs_info (missing
# lists what the request lacks). Free text is never read: a justification is only present or not.
package deskbridge.access

import rego.v1

policy_version := "2026.12.1"

nonblank(s) if {
	is_string(s)
	trim_space(s) != ""
}

# Kinds that add access must say why.
adds_access if input.kind in {"grant", "modify", "extend", "create_identity"}

non_human if input.beneficiary.type != "person"

missing contains "justification" if {
	adds_access
	not nonblank(input.justification)
}

missing contains "nhi.owner" if {
	non_human
	input.kind != "revoke"
	not nonblank(input.nhi.owner)
}

missing contains "nhi.expires_at" if {
	non_human
	input.kind != "revoke"
	not nonblank(input.nhi.expires_at)
}

# The catalog's facts.
owner := input.catalog.owner if {
	nonblank(input.catalog.owner)
} else := "IAM Governance"

entry := input.catalog.entitlement if is_object(input.catalog.entitlement)

in_catalog if {
	is_object(input.catalog.system)
	entry
}

tier := entry.tier if {
	entry
} else := "unknown"

# The directory's facts. A person is verified when the directory knows them.
people := input.context if is_object(input.context)

beneficiary := people.beneficiary if is_object(people.beneficiary)

requester := people.requester if is_object(people.requester)

nhi_owner := people.nhi_owner if is_object(people.nhi_owner)

same(a, b) if lower(a) == lower(b)

# Who may ask for access to be removed: the beneficiary, their manager, or the system's owner
# group.
may_revoke if same(input.requester.id, input.beneficiary.id)

may_revoke if same(requester.user_name, beneficiary.user_name)

may_revoke if same(requester.user_name, beneficiary.manager)

may_revoke if {
	some group in requester.groups
	same(group, owner)
}

# Separation of duties on the ticket: whoever asks (or benefits) cannot be the named approver.
ticket_sod if {
	is_string(input.approver_context.named_approver)
	same(input.approver_context.named_approver, input.requester.id)
}

ticket_sod if {
	is_string(input.approver_context.named_approver)
	same(input.approver_context.named_approver, input.beneficiary.id)
}

requested := sprintf("%s/%s", [input.target.system, input.entitlement.id])

# Catalog conflicts with what the beneficiary already holds.
conflicts contains c if {
	some c in entry.conflicts
	c.with in beneficiary.entitlements
}

hard_conflicts := [c.with | some c in conflicts; not c.mitigable]

already_held if requested in beneficiary.entitlements

# Longest access: the catalog's maximum, or less when the ticket asks for less.
max_days := entry.max_duration_days if {
	entry
} else := 7

granted_days := min([input.duration_days, max_days]) if {
	is_number(input.duration_days)
} else := max_days

# Privileged and sensitive entitlements are used with step-up authentication.
obligations := {"max_duration_days": granted_days, "step_up": tier in {"privileged", "sensitive"}}

review(reason) := {
	"outcome": "review",
	"route_to": owner,
	"reasons": [reason],
	"obligations": obligations,
}

deny(reason) := {"outcome": "deny", "reasons": [reason]}

default decision := {
	"outcome": "deny",
	"reasons": ["no rule of the access policy matched this request"],
}

decision := d if {
	input.kind == "revoke"
	may_revoke
	d := {"outcome": "approve", "reasons": ["removing access reduces risk: the beneficiary, their manager or the system owner asked"]}
} else := d if {
	input.kind == "revoke"
	d := review("a revocation asked by someone other than the beneficiary, their manager or the system owner needs the owner's approval")
} else := d if {
	count(missing) > 0
	m := sort(missing)
	d := {
		"outcome": "needs_info",
		"reasons": [sprintf("the request lacks: %s", [concat(", ", m)])],
		"missing": m,
	}
} else := d if {
	not people
	d := review("no identity directory verified the people involved")
} else := d if {
	not requester
	d := deny(sprintf("the requester %s is unknown to the identity directory", [input.requester.id]))
} else := d if {
	not requester.active
	d := deny(sprintf("the requester %s is not active in the identity directory", [input.requester.id]))
} else := d if {
	not non_human
	not beneficiary
	d := deny(sprintf("the beneficiary %s is unknown to the identity directory", [input.beneficiary.id]))
} else := d if {
	not non_human
	not beneficiary.active
	d := deny(sprintf("the beneficiary %s is not active in the identity directory (a leaver)", [input.beneficiary.id]))
} else := d if {
	non_human
	not nhi_owner
	d := deny(sprintf("the accountable owner %s of %s is unknown to the identity directory", [input.nhi.owner, input.beneficiary.id]))
} else := d if {
	non_human
	not nhi_owner.active
	d := deny(sprintf("the accountable owner %s of %s has left (inactive in the identity directory)", [input.nhi.owner, input.beneficiary.id]))
} else := d if {
	non_human
	lower(object.get(nhi_owner, "user_type", "")) in {"serviceaccount", "service account", "workload", "nhi"}
	d := deny(sprintf("the accountable owner of %s must be a person", [input.beneficiary.id]))
} else := d if {
	not in_catalog
	d := review(sprintf("%s is not in the catalog: an owner must decide", [requested]))
} else := d if {
	non_human
	not entry.nhi_allowed
	d := deny(sprintf("the catalog does not allow non-human identities to hold %s", [requested]))
} else := d if {
	count(hard_conflicts) > 0
	d := deny(sprintf("separation of duties: %s conflicts with %s, which %s already holds", [requested, concat(", ", sort(hard_conflicts)), input.beneficiary.id]))
} else := d if {
	count(conflicts) > 0
	d := review(sprintf("separation of duties: %s conflicts with %s already held; the owner may accept it with a mitigating control", [requested, concat(", ", sort([c.with | some c in conflicts]))]))
} else := d if {
	input.kind == "grant"
	already_held
	d := {"outcome": "approve", "reasons": [sprintf("%s already holds %s: no grant is needed", [input.beneficiary.id, requested])], "obligations": obligations}
} else := d if {
	ticket_sod
	d := review("separation of duties: the requester or beneficiary is also the named approver, so an independent control owner must approve")
} else := d if {
	tier in {"privileged", "sensitive"}
	d := review(sprintf("%s entitlement %s (%s) requires control-owner approval", [tier, requested, input.target.environment]))
} else := d if {
	input.target.environment == "prod"
	d := review(sprintf("production access to %s requires control-owner approval", [input.target.system]))
} else := d if {
	input.kind in {"grant", "modify", "extend", "create_identity", "rotate_credential"}
	d := {
		"outcome": "approve",
		"reasons": [sprintf("standard entitlement outside production, limited to %d days", [granted_days])],
		"obligations": obligations,
	}
}
