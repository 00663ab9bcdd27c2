/** Kubernetes Service names, and so endpoint group names, are DNS-1035 labels. */
export const DNS_1035_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Why `name` cannot name a Service or an endpoint group, or undefined when it can. */
export function groupNameProblem(name: string): string | undefined {
  return DNS_1035_LABEL.test(name) ? undefined : `"${name}" is not a Service or endpoint group name`;
}

export const GROUP_NAME_HINT = 'lower-case letters, digits and "-", starting with a letter, at most 63 (a DNS-1035 label, like a Kubernetes Service name)';
