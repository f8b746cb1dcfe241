// The Java class CloudStack records as an async job's `cmd` (AsyncJobVO: the command object's class
// name), per API name. Where CloudStack has an admin variant (…CmdByAdmin, ResponseView.Full), a root
// admin's call runs it (ApiServer.getCmdClass picks the class by the caller's view); everyone else's runs
// the user class.
import type { Role } from './types.js';

const API = 'org.apache.cloudstack.api.command';

const CLASSES: Record<string, { user: string; admin?: string }> = {
  authorizeSecurityGroupIngress: { user: `${API}.user.securitygroup.AuthorizeSecurityGroupIngressCmd` },
  authorizeSecurityGroupEgress: { user: `${API}.user.securitygroup.AuthorizeSecurityGroupEgressCmd` },
  revokeSecurityGroupIngress: { user: `${API}.user.securitygroup.RevokeSecurityGroupIngressCmd` },
  revokeSecurityGroupEgress: { user: `${API}.user.securitygroup.RevokeSecurityGroupEgressCmd` },
  createTags: { user: `${API}.user.tag.CreateTagsCmd` },
  deleteTags: { user: `${API}.user.tag.DeleteTagsCmd` },
  deleteAccount: { user: `${API}.admin.account.DeleteAccountCmd` },
  deleteNetwork: { user: `${API}.user.network.DeleteNetworkCmd` },
  deployVirtualMachine: { user: `${API}.user.vm.DeployVMCmd`, admin: `${API}.admin.vm.DeployVMCmdByAdmin` },
  startVirtualMachine: { user: `${API}.user.vm.StartVMCmd`, admin: `${API}.admin.vm.StartVMCmdByAdmin` },
  stopVirtualMachine: { user: `${API}.user.vm.StopVMCmd`, admin: `${API}.admin.vm.StopVMCmdByAdmin` },
  rebootVirtualMachine: { user: `${API}.user.vm.RebootVMCmd`, admin: `${API}.admin.vm.RebootVMCmdByAdmin` },
  destroyVirtualMachine: { user: `${API}.user.vm.DestroyVMCmd`, admin: `${API}.admin.vm.DestroyVMCmdByAdmin` },
  expungeVirtualMachine: { user: `${API}.admin.vm.ExpungeVMCmd` },
  migrateVirtualMachine: { user: `${API}.admin.vm.MigrateVMCmd` },
  addNicToVirtualMachine: { user: `${API}.user.vm.AddNicToVMCmd`, admin: `${API}.admin.vm.AddNicToVMCmdByAdmin` },
  removeNicFromVirtualMachine: { user: `${API}.user.vm.RemoveNicFromVMCmd`, admin: `${API}.admin.vm.RemoveNicFromVMCmdByAdmin` },
  addIpToNic: { user: `${API}.user.vm.AddIpToVmNicCmd` },
  removeIpFromNic: { user: `${API}.user.vm.RemoveIpFromVmNicCmd` },
};

/** The `cmd` of a job of this API submitted by this role; the API name for a command CloudStack lacks. */
export function jobClass(api: string, role: Role): string {
  const c = CLASSES[api];
  if (!c) return api;
  return role === 'admin' && c.admin ? c.admin : c.user;
}

/** Every async API with a class (tests: each async command must have one). */
export const JOB_CLASS_APIS = Object.keys(CLASSES);
