// listCapabilities: CloudStack's CapabilitiesResponse (`capability`), which its UI and clients such as
// cloudmonkey read after logging in. Every value says what Palisade itself does, not CloudStack's
// defaults for features Palisade lacks (templates, projects, snapshots, Kubernetes, region stores).
import type { CommandDef } from '../command.js';
import { CLOUDSTACK_VERSION } from '../xml.js';
import { readThrottling } from '../../store/queries/settings.js';

const listCapabilities: CommandDef = {
  name: 'listCapabilities',
  description: 'Lists capabilities',
  responseObject: 'capability',
  params: [],
  readOnly: () => true,
  async handle(ctx) {
    // The limiter's copy of the settings: what is shown is what this server enforces. (It reads through
    // the store's pool, which is why this command runs outside a transaction: on SQLite a transaction
    // holds the one connection.) The store when a context has no limiter.
    const throttling = await (ctx.apiLimits?.settings() ?? readThrottling(ctx.db));
    return {
      object: 'capability',
      value: {
        securitygroupsenabled: true,
        // Roles are fixed (user, domain admin, root admin): no role permissions to edit.
        dynamicrolesenabled: false,
        cloudstackversion: CLOUDSTACK_VERSION,
        // No templates: nothing a user could share.
        userpublictemplateenabled: false,
        supportELB: 'false',
        // No projects (listProjects is always empty): none to create, nobody to invite.
        projectinviterequired: false,
        allowusercreateprojects: false,
        // CloudStack's custom.diskoffering.size.min/max defaults (GB); Palisade has no disk offerings.
        customdiskofferingminsize: 1,
        customdiskofferingmaxsize: 1024,
        regionsecondaryenabled: false,
        kvmsnapshotenabled: false,
        // listVirtualMachines shows every role its destroyed VMs; expungeVirtualMachine is for admins only.
        allowuserviewdestroyedvm: true,
        allowuserexpungerecovervm: false,
        allowuserexpungerecovervolume: false,
        allowuserviewalldomainaccounts: false,
        kubernetesserviceenabled: false,
        kubernetesclusterexperimentalfeaturesenabled: false,
        // CloudStack's default.ui.page.size default.
        defaultuipagesize: 20,
        // The per-account API rate limit (api/rate-limit.ts), shown only while it is on, as CloudStack does.
        ...(throttling.enabled ? { apilimitinterval: throttling.intervalSeconds, apilimitmax: throttling.max } : {}),
      },
    };
  },
};

export const capabilityCommands: CommandDef[] = [listCapabilities];
