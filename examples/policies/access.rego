# deskbridge access policy.
#
# Decides access requests normalized from service-desk tickets. The input is one
# AccessRequest (see `deskbridge schema`); the output is the whole decision object:
#   {outcome, reasons, route_to?, missing?, obligations?}
# outcome is approve | deny | review (route_to names who must approve) | needs_info (missing
# lists what to add). Free text such as the justification is evidence: this policy only ever
# checks that it is present, never what it says.
package deskbridge.access

policy_version := "2026.11.1"

# Control owners who approve access to each system; anything else goes to IAM governance.
control_owners := {
	"sap-erp": "SAP Access Owners",
	"workday": "HR Systems Owners",
	"github": "Platform Engineering Leads",
	"aws-billing": "Cloud Platform Owners",
	"salesforce": "CRM Owners",
	"jira-software": "Engineering Tools Owners",
}

owner := o if {
	o := control_owners[input.target.system]
} else := "IAM Governance"

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

# Separation of duties: whoever asks (or benefits) cannot be the approver.
sod_conflict if {
	is_string(input.approver_context.named_approver)
	lower(input.approver_context.named_approver) == lower(input.requester.id)
}

sod_conflict if {
	is_string(input.approver_context.named_approver)
	lower(input.approver_context.named_approver) == lower(input.beneficiary.id)
}

# Longest access each risk tier allows.
max_days := 7 if {
	input.entitlement.privileged
} else := 30 if {
	input.target.environment == "prod"
} else := 90

granted_days := min([input.duration_days, max_days]) if {
	is_number(input.duration_days)
} else := max_days

obligations := {"max_duration_days": granted_days, "step_up": input.entitlement.privileged}

default decision := {
	"outcome": "deny",
	"reasons": ["no rule of the access policy matched this request"],
}

decision := d if {
	input.kind == "revoke"
	d := {
		"outcome": "approve",
		"reasons": ["removing access reduces risk: revocations are approved"],
	}
} else := d if {
	count(missing) > 0
	m := sort(missing)
	d := {
		"outcome": "needs_info",
		"reasons": [sprintf("the request lacks: %s", [concat(", ", m)])],
		"missing": m,
	}
} else := d if {
	sod_conflict
	d := {
		"outcome": "review",
		"route_to": owner,
		"reasons": ["separation of duties: the requester or beneficiary is also the named approver, so an independent control owner must approve"],
		"obligations": obligations,
	}
} else := d if {
	input.entitlement.privileged
	d := {
		"outcome": "review",
		"route_to": owner,
		"reasons": [sprintf("privileged entitlement on %s (%s) requires control-owner approval", [input.target.system, input.target.environment])],
		"obligations": obligations,
	}
} else := d if {
	input.target.environment == "prod"
	d := {
		"outcome": "review",
		"route_to": owner,
		"reasons": [sprintf("production access to %s requires control-owner approval", [input.target.system])],
		"obligations": obligations,
	}
} else := d if {
	input.kind in {"grant", "modify", "extend", "create_identity", "rotate_credential"}
	d := {
		"outcome": "approve",
		"reasons": [sprintf("non-privileged access outside production, limited to %d days", [granted_days])],
		"obligations": obligations,
	}
}
